/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-thread io_uring rings.  A ring is made the first time a thread asks
 * for one and torn down when the thread exits; a thread whose ring cannot
 * be set up remembers that and never tries again, so the fallback costs
 * nothing per call.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "uring.h"

struct thread_ring {
        struct io_uring ring;
        bool ok;
};

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static bool disabled;

static void ring_destroy(void *p)
{
        struct thread_ring *t = p;
        if (t->ok)
                io_uring_queue_exit(&t->ring);
        free(t);
}

static void ring_key_init(void)
{
        if (pthread_key_create(&ring_key, ring_destroy) != 0)
                disabled = true;
        const char *off = getenv("CAIRN_NO_IO_URING");
        if (off && *off && *off != '0')
                disabled = true;
}

struct io_uring *cairn_uring_thread(void)
{
        pthread_once(&ring_once, ring_key_init);
        if (disabled)
                return NULL;
        struct thread_ring *t = pthread_getspecific(ring_key);
        if (!t) {
                t = calloc(1, sizeof(*t));
                if (!t)
                        return NULL;
                /* Four linked operations per file of a batch. */
                int r = io_uring_queue_init(4 * CAIRN_URING_SLOTS, &t->ring, 0);
                if (r >= 0) {
                        r = io_uring_register_files_sparse(&t->ring, CAIRN_URING_SLOTS);
                        if (r < 0)
                                io_uring_queue_exit(&t->ring);
                }
                t->ok = r >= 0;
                if (!t->ok)
                        cairn_debug("io_uring unavailable in this thread: %s", strerror(-r));
                if (pthread_setspecific(ring_key, t) != 0) {
                        ring_destroy(t);
                        return NULL;
                }
        }
        return t->ok ? &t->ring : NULL;
}
