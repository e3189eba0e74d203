/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One io_uring per thread (house rule), created on first use, with a
 * sparse table of direct descriptors so that open -> write -> close ->
 * rename chains can be linked and submitted in one go.  Internal to
 * libcairn.
 */
#pragma once

#include <liburing.h>

/* Direct-descriptor slots per ring: the most files one batch may handle. */
#define CAIRN_URING_SLOTS 64u

/*
 * The calling thread's ring, or NULL when io_uring cannot be used here
 * (an old kernel, a seccomp filter, CAIRN_NO_IO_URING set): callers then
 * do the same work with plain system calls.
 */
struct io_uring *cairn_uring_thread(void);
