/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-volume and per-path locks for concurrent calls.  A CO should not
 * send two calls for one volume at once, but after a restart it may; the
 * CSI answer is ABORTED ("an operation is pending for the volume"), which
 * the CO retries.  So locks here are only ever tried, never waited for:
 * no call blocks behind a slow mount, and no lock order can deadlock.
 */
#pragma once

#include <pthread.h>

struct csi_lock_entry;

struct csi_lockset {
        pthread_mutex_t lock;
        struct csi_lock_entry *held; /* protected by lock */
};

#define CSI_LOCKSET_INIT                                                                           \
        {                                                                                          \
                PTHREAD_MUTEX_INITIALIZER, NULL                                                    \
        }

/* Takes key ("volume:ID", "path:/..."); -EINPROGRESS when another call holds it. */
int csi_lockset_try(struct csi_lockset *set, const char *kind, const char *key);
void csi_lockset_release(struct csi_lockset *set, const char *kind, const char *key);
