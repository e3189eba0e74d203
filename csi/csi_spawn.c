/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Child processes for handler threads (see csi_spawn.h).
 *
 * posix_spawn() (a vfork-style clone in glibc) is used rather than fork():
 * the parent is multithreaded, and nothing but the spawn machinery runs in
 * the child before exec.  The registry lock is held across the spawn and
 * the registration, so the reaper, which takes the lock after waitpid(),
 * always finds the entry of a child that exits at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "csi_spawn.h"

struct child {
        pid_t pid;
        bool exited;
        int status;
        struct child *next;
};

static pthread_mutex_t children_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t children_cond = PTHREAD_COND_INITIALIZER;
static struct child *children; /* protected by children_lock */

void csi_spawn_reap(void)
{
        int status;
        pid_t pid;

        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                pthread_mutex_lock(&children_lock);
                for (struct child *c = children; c; c = c->next) {
                        if (c->pid == pid) {
                                c->exited = true;
                                c->status = status;
                                pthread_cond_broadcast(&children_cond);
                                break;
                        }
                }
                pthread_mutex_unlock(&children_lock);
        }
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads the child's stderr until EOF or the deadline; keeps the first outlen - 1 bytes. */
static void collect_output(int fd, uint64_t deadline, char *out, size_t outlen)
{
        size_t len = 0;
        char buf[512];

        for (;;) {
                uint64_t now = now_ms();
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ssize_t n;
                int r;

                if (now >= deadline)
                        break;
                r = poll(&pfd, 1, (int)(deadline - now));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        break;
                n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (outlen > 0 && len < outlen - 1) {
                        size_t k = (size_t)n < outlen - 1 - len ? (size_t)n : outlen - 1 - len;

                        memcpy(out + len, buf, k);
                        len += k;
                }
        }
        if (outlen > 0)
                out[len] = '\0';
}

int csi_spawn_run(const char *path, char *const argv[], char *const envp[], unsigned timeout_ms,
                  int *ret_status, char *out, size_t outlen)
{
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        struct child self = {0};
        uint64_t deadline = now_ms() + timeout_ms;
        sigset_t none, defaults;
        int pipefd[2] = {-1, -1};
        bool killed = false;
        int r;

        if (outlen > 0)
                out[0] = '\0';
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        r = -posix_spawn_file_actions_init(&actions);
        if (r < 0)
                goto out_pipe;
        r = -posix_spawnattr_init(&attr);
        if (r < 0) {
                posix_spawn_file_actions_destroy(&actions);
                goto out_pipe;
        }
        sigemptyset(&none);
        /* The plugin blocks and ignores signals the child must see normally. */
        sigemptyset(&defaults);
        sigaddset(&defaults, SIGPIPE);
        sigaddset(&defaults, SIGCHLD);
        sigaddset(&defaults, SIGTERM);
        sigaddset(&defaults, SIGINT);
        sigaddset(&defaults, SIGHUP);
        r = -posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF);
        if (r >= 0)
                r = -posix_spawnattr_setsigmask(&attr, &none);
        if (r >= 0)
                r = -posix_spawnattr_setsigdefault(&attr, &defaults);
        if (r >= 0)
                r = -posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        if (r >= 0)
                r = -posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        if (r >= 0)
                r = -posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
        if (r >= 0)
                r = -posix_spawn_file_actions_addclosefrom_np(&actions, 3);
        if (r >= 0) {
                pthread_mutex_lock(&children_lock);
                r = -posix_spawn(&self.pid, path, &actions, &attr, argv, envp);
                if (r >= 0) {
                        self.next = children;
                        children = &self;
                }
                pthread_mutex_unlock(&children_lock);
        }
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
        close(pipefd[1]);
        pipefd[1] = -1;
        if (r < 0)
                goto out_pipe;

        collect_output(pipefd[0], deadline, out, outlen);

        pthread_mutex_lock(&children_lock);
        while (!self.exited) {
                uint64_t now = now_ms();
                struct timespec ts;

                if (now >= deadline) {
                        /* Killed and still there (stuck in the kernel): stop waiting. */
                        if (killed)
                                break;
                        /* Its own session, so its pid is its process group. */
                        kill(-self.pid, SIGKILL);
                        killed = true;
                        deadline = now + 5000;
                        r = -ETIMEDOUT;
                }
                clock_gettime(CLOCK_REALTIME, &ts);
                /* Short naps: a SIGCHLD that raced with registration is caught on the next turn. */
                ts.tv_nsec += 200 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&children_cond, &children_lock, &ts);
                if (!self.exited) {
                        int status;

                        /* Reap it here too, in case no event loop runs the reaper. */
                        pthread_mutex_unlock(&children_lock);
                        if (waitpid(self.pid, &status, WNOHANG) == self.pid) {
                                pthread_mutex_lock(&children_lock);
                                self.exited = true;
                                self.status = status;
                                continue;
                        }
                        pthread_mutex_lock(&children_lock);
                }
        }
        for (struct child **pp = &children; *pp; pp = &(*pp)->next) {
                if (*pp == &self) {
                        *pp = self.next;
                        break;
                }
        }
        pthread_mutex_unlock(&children_lock);
        if (r >= 0)
                *ret_status = self.status;
out_pipe:
        if (pipefd[0] >= 0)
                close(pipefd[0]);
        if (pipefd[1] >= 0)
                close(pipefd[1]);
        return r;
}
