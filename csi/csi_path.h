/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checks of the paths a CO hands us (target_path, staging_target_path).
 * They are untrusted: a path must be absolute and clean (no empty, "." or
 * ".." component, no trailing '/', no control characters), strictly under
 * the kubelet directory, and no component below the kubelet directory may
 * be a symbolic link (checked on the filesystem, component by component,
 * with O_NOFOLLOW).  The kubelet directory itself is configuration and is
 * trusted, symlinks included.
 */
#pragma once

#include <stddef.h>

enum csi_path_state {
        CSI_PATH_DIR,        /* exists, is a directory (or a live mount) */
        CSI_PATH_MISSING,    /* the last component does not exist; its parent does */
        CSI_PATH_NO_PARENT,  /* some directory above it does not exist */
        CSI_PATH_DEAD_MOUNT, /* a FUSE mount whose daemon is gone (ENOTCONN) */
};

/*
 * The lexical rules only.  root must itself be absolute and clean.
 * -EINVAL with a reason in errbuf (which quotes no more than the path).
 */
int csi_path_check_lexical(const char *path, const char *root, char *errbuf, size_t errlen);

/*
 * The lexical rules, then the walk.  -EINVAL with a reason in errbuf for
 * anything that is the caller's fault (a symlink, a file where a directory
 * should be); other -errno (EACCES, EIO, ...) as they come.
 */
int csi_path_check(const char *path, const char *root, enum csi_path_state *ret_state, char *errbuf,
                   size_t errlen);
