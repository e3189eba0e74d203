/* SPDX-License-Identifier: Apache-2.0 */
/* Small file-descriptor helpers shared by the transports.  Internal. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Writes all len bytes (retrying short writes and EINTR); -errno on failure. */
int cairn_write_all(int fd, const void *data, size_t len);
/*
 * Fills iov[0..iovcnt) in order from fd at offset (retrying short reads and
 * EINTR); -EIO when the file ends first, -errno on failure.
 */
int cairn_preadv_all(int fd, const struct iovec *iov, unsigned iovcnt, uint64_t offset);
