/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small file-descriptor helpers: one copy of the loop every writer needs,
 * instead of one per store or front.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cairn/fdio.h"

int cairn_write_all(int fd, const void *data, size_t len)
{
        const uint8_t *p = data;
        while (len) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO; /* a descriptor that takes nothing would loop forever */
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* iovecs handed to one preadv(): a short read re-issues from a copy whose first entry is trimmed. */
#define PREADV_WINDOW 64u

int cairn_preadv_all(int fd, const struct iovec *iov, unsigned iovcnt, uint64_t offset)
{
        struct iovec win[PREADV_WINDOW];
        unsigned idx = 0; /* first iovec not yet full */
        size_t done = 0;  /* bytes of iov[idx] already read */

        for (;;) {
                while (idx < iovcnt && done == iov[idx].iov_len) {
                        idx++;
                        done = 0;
                }
                if (idx == iovcnt)
                        return 0;
                unsigned n = iovcnt - idx < PREADV_WINDOW ? iovcnt - idx : PREADV_WINDOW;
                for (unsigned k = 0; k < n; k++)
                        win[k] = iov[idx + k];
                if (done) { /* iov[idx] is not empty, so its base is not NULL */
                        win[0].iov_base = (char *)win[0].iov_base + done;
                        win[0].iov_len -= done;
                }
                ssize_t got = preadv(fd, win, (int)n, (off_t)offset);
                if (got < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (got == 0)
                        return -EIO;
                offset += (uint64_t)got;
                size_t left = (size_t)got;
                while (left) {
                        size_t room = iov[idx].iov_len - done;
                        size_t take = left < room ? left : room;
                        done += take;
                        left -= take;
                        if (done == iov[idx].iov_len) {
                                idx++;
                                done = 0;
                        }
                }
        }
}
