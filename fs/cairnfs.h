/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the two halves of cairnfs share: the daemon (cairnfs.c: options,
 * mounting, the session loop) and the request handlers (fuse_ops.c: kernel
 * requests mapped onto the volume's mapped manifest and its read path).
 *
 * The settings the handlers announce in init() and the mount options the
 * daemon passes to libfuse must agree (libfuse refuses a max_read that
 * differs between the two), so they live here once.
 */
#pragma once

/* The libfuse 3.14 API: FUSE_MAKE_VERSION(3, 14), spelled out for the header's own #if tests. */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdint.h>

#include "cairn/manifest.h"

struct cairn_volume;

/*
 * Largest READ the kernel may send, and the read size we ask for: 1 MiB
 * requests keep the per-request cost (a context switch each way, a lookup
 * in the chunk table) small against the bytes moved.
 */
#define CAIRNFS_MAX_READ (1024u * 1024)
/*
 * Kernel readahead per open file.  Several 1 MiB requests in flight let
 * several workers fetch chunks of one sequential reader at once.
 */
#define CAIRNFS_READAHEAD (4u * 1024 * 1024)
/*
 * Readahead requests are "background" requests in FUSE; the kernel's
 * default of 12 in flight would cap the readahead above.
 */
#define CAIRNFS_MAX_BACKGROUND 32u
/* Content never changes under a mount: the kernel may cache names and attributes "forever". */
#define CAIRNFS_TIMEOUT 86400.0

/*
 * One mounted volume.  Set up before the session starts and read-only
 * afterwards, so the handlers share it across worker threads without a lock.
 */
struct cairnfs {
        struct cairn_volume *vol;         /* owned by main() */
        const struct cairn_manifest *man; /* borrowed from vol */
        uint32_t inode_count;             /* cached: the ino range check runs on every request */
};

extern const struct fuse_lowlevel_ops cairnfs_ops;
