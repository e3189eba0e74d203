/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mount helpers (see csi_mount.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include "cairn/log.h"
#include "cairn/mountinfo.h"
#include "csi_mount.h"

int csi_mount_find(const char *path, char *fstype, size_t fstype_len)
{
        struct cairn_mount_entry e;
        int r = cairn_mountinfo_find(path, NULL, &e);

        if (r == 1 && fstype && fstype_len)
                snprintf(fstype, fstype_len, "%s", e.fstype);
        return r;
}

int csi_mount_probe(const char *path)
{
        struct statvfs sv;

        /*
         * statfs, not stat: the kernel answers stat from cached attributes
         * (cairnfs asks for long timeouts) even when the daemon is gone,
         * while every statfs is a request to the daemon.
         */
        if (statvfs(path, &sv) == 0)
                return 0;
        /* A request caught by the daemon's death is aborted rather than refused. */
        return errno == ECONNABORTED ? -ENOTCONN : -errno;
}

int csi_mount_bind_ro(const char *src, const char *dst)
{
        int r;

        if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
                return -errno;
        /* A bind mount takes its flags only from a remount. */
        if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
            0) {
                r = -errno;
                if (umount2(dst, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
                        cairn_err("cannot undo the bind mount on '%s': %s", dst, strerror(errno));
                return r;
        }
        return 0;
}

int csi_mount_unmount(const char *path, bool lazy)
{
        if (!lazy && umount2(path, UMOUNT_NOFOLLOW) == 0)
                return 0;
        if (!lazy && errno != EBUSY)
                return -errno;
        if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
                return -errno;
        return 0;
}
