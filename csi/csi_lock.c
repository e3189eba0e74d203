/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A set of held string keys (see csi_lock.h).  Few calls run at once (the
 * server caps them), so a list is the right structure.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "csi_lock.h"

struct csi_lock_entry {
        char *kind;
        char *key;
        struct csi_lock_entry *next;
};

int csi_lockset_try(struct csi_lockset *set, const char *kind, const char *key)
{
        struct csi_lock_entry *e;
        int r = 0;

        pthread_mutex_lock(&set->lock);
        for (e = set->held; e; e = e->next)
                if (strcmp(e->kind, kind) == 0 && strcmp(e->key, key) == 0)
                        break;
        if (e) {
                r = -EINPROGRESS;
                goto out;
        }
        e = calloc(1, sizeof(*e));
        if (!e || !(e->kind = strdup(kind)) || !(e->key = strdup(key))) {
                if (e) {
                        free(e->kind);
                        free(e);
                }
                r = -ENOMEM;
                goto out;
        }
        e->next = set->held;
        set->held = e;
out:
        pthread_mutex_unlock(&set->lock);
        return r;
}

void csi_lockset_release(struct csi_lockset *set, const char *kind, const char *key)
{
        pthread_mutex_lock(&set->lock);
        for (struct csi_lock_entry **pp = &set->held; *pp; pp = &(*pp)->next) {
                struct csi_lock_entry *e = *pp;

                if (strcmp(e->kind, kind) == 0 && strcmp(e->key, key) == 0) {
                        *pp = e->next;
                        free(e->kind);
                        free(e->key);
                        free(e);
                        break;
                }
        }
        pthread_mutex_unlock(&set->lock);
}
