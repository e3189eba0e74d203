/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small file-descriptor helpers shared by the transports: one copy of the
 * loop every writer needs, instead of one per store.
 */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "fdio.h"

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
                p += n;
                len -= (size_t)n;
        }
        return 0;
}
