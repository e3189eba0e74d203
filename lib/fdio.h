/* SPDX-License-Identifier: Apache-2.0 */
/* Small file-descriptor helpers shared by the transports.  Internal. */
#pragma once

#include <stddef.h>

/* Writes all len bytes (retrying short writes and EINTR); -errno on failure. */
int cairn_write_all(int fd, const void *data, size_t len);
