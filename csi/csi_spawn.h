/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Running helper programs (cairnfs) from handler threads.
 *
 * A child is started with posix_spawn() in a session of its own (setsid):
 * it is not in cairn-csi's process group, so a signal to the plugin's
 * group or its terminal does not reach it, and cairnfs's own daemonizing
 * fork leaves a daemon whose parent is not cairn-csi at all.  Its stdin
 * and stdout are /dev/null, its stderr is captured (bounded) for the error
 * message, no other descriptor is inherited, and its environment is
 * exactly the one given (nothing of the plugin's).
 *
 * Children are reaped in one place, csi_spawn_reap(), called by the event
 * loop on SIGCHLD: it also reaps orphans re-parented to us (when
 * cairn-csi is PID 1 of a container or a subreaper), so that none stays
 * a zombie.  A handler thread waiting for its child sleeps on a condition
 * variable until the reaper records the status.
 */
#pragma once

#include <stddef.h>

/* Reaps every exited child, recording the statuses that threads wait for. */
void csi_spawn_reap(void);

/*
 * Runs path with argv and envp, waits until it exits or timeout_ms pass
 * (then its process group is killed: -ETIMEDOUT).  The first outlen - 1
 * bytes of its stderr go to out (NUL-terminated).  *ret_status is the
 * wait status.
 */
int csi_spawn_run(const char *path, char *const argv[], char *const envp[], unsigned timeout_ms,
                  int *ret_status, char *out, size_t outlen);
