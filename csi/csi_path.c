/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Path checks for CSI requests (see csi_path.h).  A path from a request
 * ends up in mount(2) and umount(2) calls made as root: without these
 * checks, a request naming "/var/lib/kubelet/../../etc" or a kubelet
 * subdirectory replaced by a symlink to "/" would mount over, or unmount,
 * anything on the node.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csi_path.h"

static int fail(char *errbuf, size_t errlen, const char *path, const char *why)
{
        snprintf(errbuf, errlen, "path '%s' %s", path, why);
        return -EINVAL;
}

int csi_path_check_lexical(const char *path, const char *root, char *errbuf, size_t errlen)
{
        size_t root_len = strlen(root), len = strlen(path);
        const char *p;

        if (len == 0)
                return fail(errbuf, errlen, path, "is empty");
        if (len >= PATH_MAX)
                return fail(errbuf, errlen, "...", "is too long");
        for (p = path; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        return fail(errbuf, errlen, "...", "contains a control character");
        if (path[0] != '/')
                return fail(errbuf, errlen, path, "is not absolute");
        /* Every component between slashes must be a real name. */
        for (p = path; *p;) {
                const char *start = ++p;
                size_t n;

                while (*p && *p != '/')
                        p++;
                n = (size_t)(p - start);
                if (n == 0)
                        return fail(errbuf, errlen, path, "has an empty component");
                if ((n == 1 && start[0] == '.') || (n == 2 && start[0] == '.' && start[1] == '.'))
                        return fail(errbuf, errlen, path, "has a '.' or '..' component");
        }
        if (len <= root_len + 1 || strncmp(path, root, root_len) != 0 || path[root_len] != '/')
                return fail(errbuf, errlen, path, "is not under the kubelet directory");
        return 0;
}

int csi_path_check(const char *path, const char *root, enum csi_path_state *ret_state, char *errbuf,
                   size_t errlen)
{
        enum csi_path_state state;
        char comp[NAME_MAX + 1];
        const char *p;
        struct stat st;
        int dirfd, r;

        r = csi_path_check_lexical(path, root, errbuf, errlen);
        if (r < 0)
                return r;
        dirfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return -errno;
        p = path + strlen(root) + 1;
        for (;;) {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t)(slash - p) : strlen(p);
                int fd;

                if (n > NAME_MAX) {
                        r = fail(errbuf, errlen, path, "has a component that is too long");
                        goto out;
                }
                memcpy(comp, p, n);
                comp[n] = '\0';
                if (!slash)
                        break;
                fd = openat(dirfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0) {
                        r = -errno;
                        if (r == -ENOENT) {
                                *ret_state = CSI_PATH_NO_PARENT;
                                r = 0;
                                goto out;
                        }
                        if (r == -ELOOP || r == -ENOTDIR) {
                                bool link = fstatat(dirfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                            S_ISLNK(st.st_mode);

                                r = fail(errbuf, errlen, path,
                                         link ? "has a symlinked component"
                                              : "has a component that is not a directory");
                        }
                        goto out;
                }
                close(dirfd);
                dirfd = fd;
                p = slash + 1;
        }
        if (fstatat(dirfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = -errno;
                if (r == -ENOENT)
                        state = CSI_PATH_MISSING;
                else if (r == -ENOTCONN || r == -ECONNABORTED)
                        state = CSI_PATH_DEAD_MOUNT;
                else
                        goto out;
        } else if (S_ISLNK(st.st_mode)) {
                r = fail(errbuf, errlen, path, "is a symlink");
                goto out;
        } else if (!S_ISDIR(st.st_mode)) {
                r = fail(errbuf, errlen, path, "is not a directory");
                goto out;
        } else {
                state = CSI_PATH_DIR;
        }
        *ret_state = state;
        r = 0;
out:
        close(dirfd);
        return r;
}
