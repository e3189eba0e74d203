/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mount operations of the node plugin: finding what is mounted on a path
 * (from /proc/self/mountinfo, which never waits on a FUSE daemon), probing
 * a FUSE mount for a dead daemon (ENOTCONN), read-only bind mounts, and
 * unmounting.  Paths are checked by csi_path.c before they get here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The filesystem type of a cairnfs mount, and of a bind mount of one. */
#define CSI_CAIRNFS_FSTYPE "fuse.cairnfs"

/*
 * Whether path is a mount point; if so, the type of the mount on top goes
 * to fstype (e.g. "fuse.cairnfs").  0: not mounted, 1: mounted, -errno.
 */
int csi_mount_find(const char *path, char *fstype, size_t fstype_len);

/* statfs() through the mount: 0 when it answers, -ENOTCONN when its daemon is gone. */
int csi_mount_probe(const char *path);

/* Bind-mounts src on dst read-only, nosuid, nodev (two mount(2) calls). */
int csi_mount_bind_ro(const char *src, const char *dst);

/*
 * Unmounts path (not following a symlink); a busy mount is detached
 * (lazy) instead.  lazy: detach at once (for a dead FUSE mount).
 */
int csi_mount_unmount(const char *path, bool lazy);
