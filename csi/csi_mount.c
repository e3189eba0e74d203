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
#include "csi_mount.h"

/* Undoes mountinfo's octal escapes (\040 for a space, ...) in place. */
static void unescape(char *s)
{
        char *out = s;

        for (; *s; s++) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *out++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
                        s += 3;
                } else {
                        *out++ = *s;
                }
        }
        *out = '\0';
}

int csi_mount_find(const char *path, char *fstype, size_t fstype_len)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char *line = NULL;
        size_t cap = 0;
        int found = 0;

        if (!f)
                return -errno;
        /* Later lines are mounted later: the last match is the mount on top. */
        while (getline(&line, &cap, f) > 0) {
                char *save = NULL, *tok, *mountpoint = NULL, *type = NULL;
                int i = 0;

                for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
                        if (i == 4)
                                mountpoint = tok;
                        if (i >= 5 && strcmp(tok, "-") == 0) {
                                type = strtok_r(NULL, " \n", &save);
                                break;
                        }
                        i++;
                }
                if (!mountpoint || !type)
                        continue;
                unescape(mountpoint);
                if (strcmp(mountpoint, path) != 0)
                        continue;
                found = 1;
                if (fstype && fstype_len)
                        snprintf(fstype, fstype_len, "%s", type);
        }
        free(line);
        fclose(f);
        return found;
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
