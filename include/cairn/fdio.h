/* SPDX-License-Identifier: Apache-2.0 */
/* Small file-descriptor helpers: the loops every reader and writer of a descriptor needs. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Writes all len bytes (retrying short writes and EINTR); -errno on failure, -EIO if nothing is taken. */
int cairn_write_all(int fd, const void *data, size_t len);
/*
 * Fills iov[0..iovcnt) in order from fd at offset (retrying short reads and
 * EINTR); -EIO when the file ends first, -errno on failure.
 */
int cairn_preadv_all(int fd, const struct iovec *iov, unsigned iovcnt, uint64_t offset);
