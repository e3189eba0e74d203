/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local directory store, the embedded default: no server needed.
 *
 *   ROOT/blobs/sha256/<hex>   content-addressed blobs
 *   ROOT/refs/<name>/<tag>    "sha256:<hex>\n"
 *   ROOT/tmp/                 uploads in progress (same filesystem, so the
 *                             final rename is atomic)
 *
 * Blobs and refs are fsynced before they are named, and a ref is written
 * only after the blobs it points at, so a crash never leaves a ref to a
 * missing or partial manifest.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/ref.h"
#include "cairn/fdio.h"
#include "store_backend.h"


struct file_store {
        struct cairn_store base;
        char *root;
        int root_fd;
};

/*
 * Blobs are fsynced before they are named.  To keep that final fsync from
 * costing a full pass over the disk at the end, writeback of each written
 * window is started while the build goes on (sync_file_range), so disk
 * writes overlap hashing and compression.
 */
#define WRITEBACK_WINDOW (8u << 20)

struct file_blob_writer {
        struct cairn_blob_writer base;
        struct file_store *store;
        int fd;
        uint64_t written;   /* bytes written so far */
        uint64_t flushed;   /* writeback started up to here */
        char tmp_name[64]; /* relative to root */
};

static struct file_store *to_file_store(struct cairn_store *s)
{
        return (struct file_store *)s;
}

static void blob_rel_path(const struct cairn_digest *d, char buf[static 96])
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(d, hex);
        snprintf(buf, 96, "blobs/sha256/%s", hex);
}

/* mkdir -p for a path relative to dirfd. */
static int mkdir_p_at(int dirfd, const char *rel)
{
        char path[PATH_MAX];
        size_t len = strlen(rel);
        if (len >= sizeof(path))
                return -ENAMETOOLONG;
        memcpy(path, rel, len + 1);
        for (char *p = path + 1; ; p++) {
                if (*p == '/' || *p == '\0') {
                        char saved = *p;
                        *p = '\0';
                        if (mkdirat(dirfd, path, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *p = saved;
                        if (saved == '\0')
                                break;
                }
        }
        return 0;
}

static int fsync_dir_at(int dirfd, const char *rel)
{
        int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = fsync(fd) < 0 ? -errno : 0;
        close(fd);
        return r;
}

/* Creates a unique temporary file under tmp/; its name goes to name (64 bytes). */
static int tmpfile_create(struct file_store *fs, char name[static 64])
{
        for (int attempt = 0; attempt < 100; attempt++) {
                uint64_t rnd;
                if (getentropy(&rnd, sizeof(rnd)) < 0)
                        return -errno;
                snprintf(name, 64, "tmp/%d-%016llx", (int)getpid(), (unsigned long long)rnd);
                int fd = openat(fs->root_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

static int file_read_ref(struct cairn_store *s, const char *name, const char *tag,
                         struct cairn_digest *ret_digest)
{
        struct file_store *fs = to_file_store(s);
        char path[PATH_MAX], buf[CAIRN_REF_OBJECT_MAX + 1];
        int r;

        if (snprintf(path, sizeof(path), "refs/%s/%s", name, tag) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        int fd = openat(fs->root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ELOOP ? -EINVAL : -errno;
        ssize_t n = pread(fd, buf, sizeof(buf), 0);
        r = -errno;
        close(fd);
        if (n < 0)
                return r;
        /* An embedded NUL would hide trailing junk from the string parser below. */
        if (memchr(buf, '\0', (size_t)n))
                return -EINVAL;
        return cairn_ref_object_parse(buf, (size_t)n, ret_digest);
}

static int file_write_ref(struct cairn_store *s, const char *name, const char *tag,
                          const struct cairn_digest *digest)
{
        struct file_store *fs = to_file_store(s);
        char dir[PATH_MAX], path[PATH_MAX], tmp[64], text[CAIRN_DIGEST_STR_SIZE + 1];
        int r;

        if (snprintf(dir, sizeof(dir), "refs/%s", name) >= (int)sizeof(dir) ||
            snprintf(path, sizeof(path), "refs/%s/%s", name, tag) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        r = mkdir_p_at(fs->root_fd, dir);
        if (r < 0)
                return r;
        cairn_digest_to_string(digest, text);
        strcat(text, "\n");
        int fd = tmpfile_create(fs, tmp);
        if (fd < 0)
                return fd;
        r = cairn_write_all(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r >= 0 && renameat(fs->root_fd, tmp, fs->root_fd, path) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(fs->root_fd, tmp, 0);
                return r;
        }
        return fsync_dir_at(fs->root_fd, dir);
}

static int file_blob_size(struct cairn_store *s, const struct cairn_digest *d, uint64_t *ret_size)
{
        struct file_store *fs = to_file_store(s);
        char rel[96];
        struct stat st;
        blob_rel_path(d, rel);
        if (fstatat(fs->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        *ret_size = (uint64_t)st.st_size;
        return 0;
}

static int file_open_blob_fd(struct cairn_store *s, const struct cairn_digest *d, int *ret_fd)
{
        struct file_store *fs = to_file_store(s);
        char rel[96];
        blob_rel_path(d, rel);
        int fd = openat(fs->root_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        *ret_fd = fd;
        return 0;
}

static int file_read_blob(struct cairn_store *s, const struct cairn_digest *d, uint64_t offset,
                          const struct iovec *iov, unsigned iovcnt, size_t len,
                          uint64_t deadline_ns)
{
        (void)deadline_ns; /* local reads do not wait on anything with a deadline */
        (void)len;         /* the iovecs say it */
        int fd = -1, r;
        r = file_open_blob_fd(s, d, &fd);
        if (r < 0)
                return r;
        /* -EIO at the end of the file: the blob is shorter than the index says. */
        r = cairn_preadv_all(fd, iov, iovcnt, offset);
        close(fd);
        return r;
}

static int file_copy_blob_to_fd(struct cairn_store *s, const struct cairn_digest *d, int out_fd,
                                uint64_t max_size, uint64_t *ret_size)
{
        int fd = -1, r;
        struct stat st;
        r = file_open_blob_fd(s, d, &fd);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto out;
        }
        if ((uint64_t)st.st_size > max_size) {
                r = -EFBIG;
                goto out;
        }
        uint64_t left = (uint64_t)st.st_size;
        while (left) {
                ssize_t n = sendfile(out_fd, fd, NULL, left > (1u << 30) ? (1u << 30) : left);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto out;
                }
                if (n == 0) {
                        r = -EIO;
                        goto out;
                }
                left -= (uint64_t)n;
        }
        *ret_size = (uint64_t)st.st_size;
        r = 0;
out:
        close(fd);
        return r;
}

static int file_remove_blob(struct cairn_store *s, const struct cairn_digest *d)
{
        struct file_store *fs = to_file_store(s);
        char rel[96];
        blob_rel_path(d, rel);
        return unlinkat(fs->root_fd, rel, 0) < 0 ? -errno : 0;
}

static int file_writer_write(struct cairn_blob_writer *base, const void *data, size_t len)
{
        struct file_blob_writer *w = (struct file_blob_writer *)base;
        int r = cairn_write_all(w->fd, data, len);
        if (r < 0)
                return r;
        w->written += len;
        if (w->written - w->flushed >= WRITEBACK_WINDOW) {
                /* Best effort: a failure here shows up again at fsync. */
                sync_file_range(w->fd, (off64_t)w->flushed, (off64_t)(w->written - w->flushed),
                                SYNC_FILE_RANGE_WRITE);
                w->flushed = w->written;
        }
        return 0;
}

static int file_writer_commit(struct cairn_blob_writer *base, const struct cairn_digest *digest,
                              bool *ret_created)
{
        struct file_blob_writer *w = (struct file_blob_writer *)base;
        char rel[96];
        blob_rel_path(digest, rel);
        if (fsync(w->fd) < 0)
                return -errno;
        if (renameat2(w->store->root_fd, w->tmp_name, w->store->root_fd, rel, RENAME_NOREPLACE) <
            0) {
                if (errno != EEXIST)
                        return -errno;
                /* Same content already stored: keep the existing blob. */
                unlinkat(w->store->root_fd, w->tmp_name, 0);
                w->tmp_name[0] = '\0';
                *ret_created = false;
                return 0;
        }
        w->tmp_name[0] = '\0';
        *ret_created = true;
        return fsync_dir_at(w->store->root_fd, "blobs/sha256");
}

static void file_writer_free(struct cairn_blob_writer *base)
{
        struct file_blob_writer *w = (struct file_blob_writer *)base;
        if (w->fd >= 0)
                close(w->fd);
        if (w->tmp_name[0])
                unlinkat(w->store->root_fd, w->tmp_name, 0);
        free(w);
}

static const struct cairn_blob_writer_ops file_writer_ops = {
        .write = file_writer_write,
        .commit = file_writer_commit,
        .free = file_writer_free,
};

static int file_blob_writer_new(struct cairn_store *s, struct cairn_blob_writer **ret_writer)
{
        struct file_store *fs = to_file_store(s);
        struct file_blob_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->base.ops = &file_writer_ops;
        w->store = fs;
        w->fd = tmpfile_create(fs, w->tmp_name);
        if (w->fd < 0) {
                int r = w->fd;
                free(w);
                return r;
        }
        *ret_writer = &w->base;
        return 0;
}

static void file_free(struct cairn_store *s)
{
        struct file_store *fs = to_file_store(s);
        if (fs->root_fd >= 0)
                close(fs->root_fd);
        free(fs->root);
        free(fs);
}

static const struct cairn_store_ops file_ops = {
        .read_ref = file_read_ref,
        .write_ref = file_write_ref,
        .blob_size = file_blob_size,
        .read_blob = file_read_blob,
        .open_blob_fd = file_open_blob_fd,
        .copy_blob_to_fd = file_copy_blob_to_fd,
        .remove_blob = file_remove_blob,
        .blob_writer_new = file_blob_writer_new,
        .free = file_free,
};

int cairn_store_file_open(const char *path, bool create, struct cairn_store **ret_store)
{
        struct file_store *fs;
        int r;

        if (create) {
                r = mkdir_p_at(AT_FDCWD, path);
                if (r < 0)
                        return r;
        }
        fs = calloc(1, sizeof(*fs));
        if (!fs)
                return -ENOMEM;
        fs->base.ops = &file_ops;
        fs->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fs->root_fd < 0) {
                r = -errno;
                goto fail;
        }
        fs->root = strdup(path);
        if (!fs->root) {
                r = -ENOMEM;
                goto fail;
        }
        if (create) {
                static const char *const dirs[] = {"blobs/sha256", "refs", "tmp"};
                for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                        r = mkdir_p_at(fs->root_fd, dirs[i]);
                        if (r < 0)
                                goto fail;
                }
        } else {
                /* A directory without blobs/ is not a store: say so instead of ENOENT later. */
                struct stat st;
                if (fstatat(fs->root_fd, "blobs/sha256", &st, 0) < 0 || !S_ISDIR(st.st_mode)) {
                        r = -ENOTDIR;
                        goto fail;
                }
        }
        *ret_store = &fs->base;
        return 0;
fail:
        file_free(&fs->base);
        return r;
}
