/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading /proc/self/mountinfo: which mount is on top of a path, its
 * filesystem type and device.  Used by cairnfs (its own mount's device, to
 * raise readahead) and cairn-csi (what is mounted at a target).
 */
#pragma once

#include <stddef.h>

struct cairn_mount_entry {
        unsigned major, minor;
        char fstype[64]; /* "fuse.cairnfs", "ext4", ... (truncated if longer) */
};

/*
 * Parses one mountinfo line (modified in place): the mount point with its
 * octal escapes (\040 for a space, ...) undone into *ret_mountpoint, which
 * points into line.  -EINVAL for a line without the fields.
 */
int cairn_mountinfo_parse(char *line, char **ret_mountpoint, struct cairn_mount_entry *ret_entry);

/*
 * The mount on top of mountpoint (the last matching line: later lines are
 * mounted later), only among mounts of fstype unless it is NULL.  1 and
 * *ret_entry when there is one, 0 when not, -errno when mountinfo cannot
 * be read.
 */
int cairn_mountinfo_find(const char *mountpoint, const char *fstype,
                         struct cairn_mount_entry *ret_entry);
