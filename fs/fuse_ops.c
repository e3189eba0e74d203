/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The FUSE low-level request handlers of cairnfs: each kernel request is
 * answered from the volume's mmapped, validated manifest (names, attributes,
 * directory listings, symlink targets) or from its read path (file bytes).
 *
 * Node ids are manifest inode indexes plus one, so the root (index 0) is
 * FUSE_ROOT_ID and no table maps between the two; lookups need no reference
 * counting because every inode lives as long as the mount.  Every request
 * costs at most a binary search: nothing walks a whole directory.
 *
 * The volume never changes under a mount, so everything the kernel is told
 * may be cached for as long as it likes: long entry and attribute timeouts,
 * negative lookups cached, keep_cache on open, cached readdir and symlinks.
 * Mutating requests are refused with EROFS (the mount is also MS_RDONLY, so
 * the VFS refuses most of them before they get here).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/volume.h"
#include "cairnfs.h"

/* st_blksize and the statfs block size; see fill_stat(). */
#define CAIRNFS_BLOCK_SIZE 4096u
/* Inodes never get reused within a mount, so one generation fits all. */
#define CAIRNFS_GENERATION 1

static struct cairnfs *req_fs(fuse_req_t req)
{
        return fuse_req_userdata(req);
}

/* The one place where a -errno becomes the positive errno FUSE expects. */
static void reply_err(fuse_req_t req, int r)
{
        fuse_reply_err(req, -r);
}

/* Node id -> manifest inode index; -ESTALE for an id this mount never handed out. */
static int node_index(const struct cairnfs *fs, fuse_ino_t node, uint32_t *ret_index)
{
        if (node == 0 || node > fs->inode_count)
                return -ESTALE;
        *ret_index = (uint32_t)(node - 1);
        return 0;
}

static fuse_ino_t index_node(uint32_t index)
{
        return (fuse_ino_t)index + 1;
}

static const struct cairn_manifest_inode *inode_of(const struct cairnfs *fs, uint32_t index)
{
        return cairn_manifest_inode(fs->man, index);
}

/*
 * st_blksize is 4096, the page size, rather than the 1 MiB read size: it is
 * only advice to userspace, and stdio and Python size every buffer of every
 * open file by it.  Large sequential reads are made large by the kernel's
 * readahead and max_read regardless of the size of the reader's calls.
 */
static void fill_stat(const struct cairnfs *fs, uint32_t index, struct stat *st)
{
        const struct cairn_manifest_inode *in = inode_of(fs, index);

        memset(st, 0, sizeof(*st));
        st->st_ino = index_node(index);
        st->st_mode = in->mode;
        st->st_nlink = in->nlink;
        st->st_uid = in->uid;
        st->st_gid = in->gid;
        /* Files: bytes; symlinks: target length; directories: number of entries. */
        st->st_size = (off_t)in->size;
        if (S_ISREG(in->mode))
                st->st_blocks = (blkcnt_t)(in->size / 512 + (in->size % 512 != 0));
        st->st_blksize = CAIRNFS_BLOCK_SIZE;
        st->st_mtim.tv_sec = in->mtime_sec;
        st->st_mtim.tv_nsec = in->mtime_nsec;
        st->st_atim = st->st_mtim;
        st->st_ctim = st->st_mtim;
}

static void fill_entry(const struct cairnfs *fs, uint32_t index, struct fuse_entry_param *e)
{
        memset(e, 0, sizeof(*e));
        e->ino = index_node(index);
        e->generation = CAIRNFS_GENERATION;
        fill_stat(fs, index, &e->attr);
        e->attr_timeout = CAIRNFS_TIMEOUT;
        e->entry_timeout = CAIRNFS_TIMEOUT;
}

/*
 * The path of inode index for error messages, "" for the root.  Walks the
 * parent chain and scans each parent for the child: linear in the sizes of
 * those directories, so it is for the error path only.
 */
static void path_of(const struct cairnfs *fs, uint32_t index, char *buf, size_t len)
{
        size_t pos = len - 1;

        buf[pos] = '\0';
        while (index != 0) {
                const struct cairn_manifest_inode *in = inode_of(fs, index);
                uint32_t parent = in->parent;
                const struct cairn_manifest_inode *pin = inode_of(fs, parent);
                const struct cairn_manifest_dirent *d = NULL;

                for (uint64_t i = 0; i < pin->count; i++) {
                        d = cairn_manifest_dirent_at(fs->man, parent, i);
                        if (d && d->inode == index)
                                break;
                        d = NULL;
                }
                if (!d || d->name_len + 1 > pos) {
                        /* Not expected in a valid manifest; keep what we have, marked as cut. */
                        if (pos >= 4) {
                                pos -= 4;
                                memcpy(buf + pos, ".../", 4);
                        }
                        break;
                }
                pos -= d->name_len;
                memcpy(buf + pos, cairn_manifest_string(fs->man, d->name_offset), d->name_len);
                if (parent != 0)
                        buf[--pos] = '/';
                index = parent;
        }
        memmove(buf, buf + pos, len - pos);
}

/*
 * A damaged chunk fails every read that touches it, and the kernel retries
 * failed readahead page by page: one line per second is enough to tell the
 * operator which file is affected without flooding syslog.
 */
static void log_read_error(const struct cairnfs *fs, uint32_t index, uint64_t off, size_t len,
                           int r)
{
        static _Atomic int64_t last_logged;
        struct timespec now;
        char path[1024];
        int64_t last;

        clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
        last = atomic_load(&last_logged);
        if (now.tv_sec == last ||
            !atomic_compare_exchange_strong(&last_logged, &last, (int64_t)now.tv_sec))
                return;
        path_of(fs, index, path, sizeof(path));
        cairn_err("cannot read '/%s' (%zu bytes at offset %llu): %s", path, len,
                  (unsigned long long)off, strerror(-r));
}

static void cairnfs_init(void *userdata, struct fuse_conn_info *conn)
{
        static const unsigned wanted = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS |
                                       FUSE_CAP_READDIRPLUS | FUSE_CAP_CACHE_SYMLINKS;
        /*
         * READDIRPLUS_AUTO lets the kernel ask for plain listings unless it
         * saw lookups in the directory; our attributes cost no more than the
         * names (both are in the mapped manifest), so always hand them out.
         * The data never changes, so there is nothing for AUTO_INVAL_DATA
         * to invalidate: without it the kernel skips attribute checks before
         * cached reads.  NO_OPENDIR_SUPPORT is not used: opendir is where
         * the kernel is told to keep listings cached.
         */
        static const unsigned unwanted = FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_AUTO_INVAL_DATA |
                                         FUSE_CAP_WRITEBACK_CACHE;

        (void)userdata;
        /* Must equal the max_read mount option, or libfuse refuses the session. */
        conn->max_read = CAIRNFS_MAX_READ;
        /* The kernel takes the smaller of this and the BDI's read_ahead_kb (raised at mount). */
        conn->max_readahead = CAIRNFS_READAHEAD;
        conn->max_background = CAIRNFS_MAX_BACKGROUND;
        /* libfuse aborts the session on a wanted bit the kernel lacks. */
        conn->want |= wanted & conn->capable;
        conn->want &= ~unwanted;
}

static void cairnfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct cairnfs *fs = req_fs(req);
        struct fuse_entry_param e;
        uint32_t dir, child;
        size_t len = strlen(name);
        int r;

        r = node_index(fs, parent, &dir);
        if (r < 0)
                goto fail;
        if (len > CAIRN_NAME_MAX) {
                r = -ENAMETOOLONG;
                goto fail;
        }
        r = cairn_manifest_lookup(fs->man, dir, name, len, &child);
        if (r == -ENOENT) {
                /* Node id 0 with a timeout: the kernel caches the miss as a negative dentry. */
                memset(&e, 0, sizeof(e));
                e.entry_timeout = CAIRNFS_TIMEOUT;
                fuse_reply_entry(req, &e);
                return;
        }
        if (r < 0)
                goto fail;
        fill_entry(fs, child, &e);
        fuse_reply_entry(req, &e);
        return;
fail:
        reply_err(req, r);
}

static void cairnfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct cairnfs *fs = req_fs(req);
        struct stat st;
        uint32_t index;
        int r;

        (void)fi;
        r = node_index(fs, ino, &index);
        if (r < 0) {
                reply_err(req, r);
                return;
        }
        fill_stat(fs, index, &st);
        fuse_reply_attr(req, &st, CAIRNFS_TIMEOUT);
}

static void cairnfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
        struct cairnfs *fs = req_fs(req);
        const struct cairn_manifest_inode *in;
        char target[CAIRN_SYMLINK_MAX + 1];
        uint32_t index;
        int r;

        r = node_index(fs, ino, &index);
        if (r < 0)
                goto fail;
        in = inode_of(fs, index);
        if (!S_ISLNK(in->mode)) {
                r = -EINVAL;
                goto fail;
        }
        /* Validation bounds the target; the string table does not NUL-terminate it. */
        if (in->count > CAIRN_SYMLINK_MAX) {
                r = -EIO;
                goto fail;
        }
        memcpy(target, cairn_manifest_string(fs->man, in->first), in->count);
        target[in->count] = '\0';
        fuse_reply_readlink(req, target);
        return;
fail:
        reply_err(req, r);
}

static void cairnfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct cairnfs *fs = req_fs(req);
        const struct cairn_manifest_inode *in;
        uint32_t index;
        int r;

        r = node_index(fs, ino, &index);
        if (r < 0)
                goto fail;
        in = inode_of(fs, index);
        if (S_ISDIR(in->mode)) {
                r = -EISDIR;
                goto fail;
        }
        if (!S_ISREG(in->mode)) {
                r = -EINVAL;
                goto fail;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
                r = -EROFS;
                goto fail;
        }
        /*
         * The bytes behind an inode never change: pages cached by an earlier
         * open stay valid.  No direct_io, ever: loaders mmap their weights.
         * Nothing to flush on close either, which saves a round trip per close.
         */
        fi->keep_cache = 1;
        fi->direct_io = 0;
        fi->noflush = 1;
        fuse_reply_open(req, fi);
        return;
fail:
        reply_err(req, r);
}

/* A read in flight: the reply goes out from whichever thread completes it. */
struct read_op {
        fuse_req_t req;
        struct cairnfs *fs;
        uint32_t index;
        uint64_t off;
        size_t size;
};

/*
 * The reply is written straight from the volume's chunk buffers (pinned
 * until this returns): one writev, no copy into a reply buffer.
 */
static void read_reply(void *ctx, const struct iovec *iov, unsigned iovcnt, ssize_t n)
{
        struct read_op *op = ctx;
        if (n >= 0) {
                fuse_reply_iov(op->req, iov, (int)iovcnt);
        } else {
                if (n == -EIO)
                        log_read_error(op->fs, op->index, op->off, op->size, (int)n);
                reply_err(op->req, n == -ECANCELED ? -EIO : (int)n);
        }
        free(op);
}

/*
 * Reads never make a FUSE worker wait on the network: data already in
 * memory is answered on the spot, anything else is handed to the volume's
 * reader pool, which replies when the chunks arrive.  The kernel never
 * asks for more than max_read; the check keeps a bogus size from pinning
 * more than that.
 */
static void cairnfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
        struct cairnfs *fs = req_fs(req);
        uint32_t index;
        int r;

        (void)fi;
        r = node_index(fs, ino, &index);
        if (r < 0)
                goto fail;
        if (off < 0 || size > CAIRNFS_MAX_READ) {
                r = -EINVAL;
                goto fail;
        }
        struct read_op *op = malloc(sizeof(*op));
        if (!op) {
                r = -ENOMEM;
                goto fail;
        }
        *op = (struct read_op){.req = req, .fs = fs, .index = index, .off = (uint64_t)off,
                               .size = size};
        r = cairn_volume_read_pinned_async(fs->vol, index, (uint64_t)off, size, read_reply, op);
        if (r < 0) {
                free(op);
                goto fail;
        }
        return;
fail:
        reply_err(req, r);
}

static void cairnfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct cairnfs *fs = req_fs(req);
        uint32_t index;
        int r;

        r = node_index(fs, ino, &index);
        if (r < 0)
                goto fail;
        if (!S_ISDIR(inode_of(fs, index)->mode)) {
                r = -ENOTDIR;
                goto fail;
        }
        /*
         * Listings never change: the kernel may keep them in its page cache
         * across opens (keep_cache does apply to directories, whatever the
         * libfuse comment says: without it the kernel drops the cached
         * listing at every opendir).
         */
        fi->cache_readdir = 1;
        fi->keep_cache = 1;
        fuse_reply_open(req, fi);
        return;
fail:
        reply_err(req, r);
}

/*
 * Directory offsets are entry positions: 0 is ".", 1 is "..", 2 + i is the
 * manifest's i-th entry.  Each entry carries the offset of the next one, so
 * a listing resumes anywhere in O(1) and offsets stay valid forever.
 */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
        struct cairnfs *fs = req_fs(req);
        const struct cairn_manifest_inode *in;
        char name[CAIRN_NAME_MAX + 1];
        char *buf = NULL;
        size_t used = 0;
        uint32_t index;
        uint64_t total;
        int r;

        r = node_index(fs, ino, &index);
        if (r < 0)
                goto fail;
        in = inode_of(fs, index);
        if (!S_ISDIR(in->mode)) {
                r = -ENOTDIR;
                goto fail;
        }
        if (off < 0) {
                r = -EINVAL;
                goto fail;
        }
        /* The kernel asks for a page or so; a shorter answer is always allowed. */
        if (size > CAIRNFS_MAX_READ)
                size = CAIRNFS_MAX_READ;
        buf = malloc(size ? size : 1);
        if (!buf) {
                r = -ENOMEM;
                goto fail;
        }

        total = in->count + 2;
        for (uint64_t pos = (uint64_t)off; pos < total; pos++) {
                uint32_t child;
                size_t ent;

                if (pos < 2) {
                        child = pos == 0 ? index : in->parent;
                        strcpy(name, pos == 0 ? "." : "..");
                } else {
                        const struct cairn_manifest_dirent *d =
                                cairn_manifest_dirent_at(fs->man, index, pos - 2);
                        if (!d || d->name_len > CAIRN_NAME_MAX) {
                                r = -EIO;
                                goto fail;
                        }
                        /* The string table does not NUL-terminate names; libfuse needs it. */
                        memcpy(name, cairn_manifest_string(fs->man, d->name_offset), d->name_len);
                        name[d->name_len] = '\0';
                        child = d->inode;
                }

                if (plus) {
                        struct fuse_entry_param e;

                        if (pos < 2) {
                                /* The kernel links no dentry for "." and ".."; node 0 says so. */
                                memset(&e, 0, sizeof(e));
                                e.attr.st_ino = index_node(child);
                                e.attr.st_mode = inode_of(fs, child)->mode;
                        } else {
                                fill_entry(fs, child, &e);
                        }
                        ent = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
                                                     (off_t)(pos + 1));
                } else {
                        struct stat st = {
                                .st_ino = index_node(child),
                                .st_mode = inode_of(fs, child)->mode,
                        };
                        ent = fuse_add_direntry(req, buf + used, size - used, name, &st,
                                                (off_t)(pos + 1));
                }
                if (ent > size - used)
                        break;
                used += ent;
        }
        fuse_reply_buf(req, buf, used);
        free(buf);
        return;
fail:
        /* Entries already in buf are dropped with it: nothing was sent, so nothing is counted. */
        free(buf);
        reply_err(req, r);
}

static void cairnfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                            struct fuse_file_info *fi)
{
        (void)fi;
        do_readdir(req, ino, size, off, false);
}

static void cairnfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                                struct fuse_file_info *fi)
{
        (void)fi;
        do_readdir(req, ino, size, off, true);
}

static void cairnfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
        struct cairnfs *fs = req_fs(req);
        uint64_t logical = fs->man->hdr->logical_size;
        struct statvfs st;

        (void)ino;
        memset(&st, 0, sizeof(st));
        st.f_bsize = CAIRNFS_BLOCK_SIZE;
        st.f_frsize = CAIRNFS_BLOCK_SIZE;
        /* df shows the volume's logical size, fully used: nothing can be added. */
        st.f_blocks = logical / CAIRNFS_BLOCK_SIZE + (logical % CAIRNFS_BLOCK_SIZE != 0);
        st.f_files = fs->inode_count;
        st.f_namemax = CAIRN_NAME_MAX;
        st.f_flag = ST_RDONLY | ST_NOSUID;
        fuse_reply_statfs(req, &st);
}

/*
 * Only reached without default_permissions (which cairnfs always sets, so
 * the kernel checks modes itself); then writing is all there is to refuse.
 */
static void cairnfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
        struct cairnfs *fs = req_fs(req);
        uint32_t index;
        int r;

        r = node_index(fs, ino, &index);
        if (r >= 0 && (mask & W_OK))
                r = -EROFS;
        reply_err(req, r < 0 ? r : 0);
}

/* Mutating requests: the volume is immutable. */

static void cairnfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                            struct fuse_file_info *fi)
{
        (void)ino, (void)attr, (void)to_set, (void)fi;
        reply_err(req, -EROFS);
}

static void cairnfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                          dev_t rdev)
{
        (void)parent, (void)name, (void)mode, (void)rdev;
        reply_err(req, -EROFS);
}

static void cairnfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        (void)parent, (void)name, (void)mode;
        reply_err(req, -EROFS);
}

static void cairnfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        (void)parent, (void)name;
        reply_err(req, -EROFS);
}

static void cairnfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
        (void)link, (void)parent, (void)name;
        reply_err(req, -EROFS);
}

static void cairnfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                           fuse_ino_t newparent, const char *newname, unsigned int flags)
{
        (void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
        reply_err(req, -EROFS);
}

static void cairnfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                         const char *newname)
{
        (void)ino, (void)newparent, (void)newname;
        reply_err(req, -EROFS);
}

static void cairnfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                          off_t off, struct fuse_file_info *fi)
{
        (void)ino, (void)buf, (void)size, (void)off, (void)fi;
        reply_err(req, -EROFS);
}

static void cairnfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                           struct fuse_file_info *fi)
{
        (void)parent, (void)name, (void)mode, (void)fi;
        reply_err(req, -EROFS);
}

static void cairnfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                             size_t size, int flags)
{
        (void)ino, (void)name, (void)value, (void)size, (void)flags;
        reply_err(req, -EROFS);
}

static void cairnfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
        (void)ino, (void)name;
        reply_err(req, -EROFS);
}

static void cairnfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                              off_t length, struct fuse_file_info *fi)
{
        (void)ino, (void)mode, (void)offset, (void)length, (void)fi;
        reply_err(req, -EROFS);
}

static void cairnfs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                                    struct fuse_file_info *fi_in, fuse_ino_t ino_out,
                                    off_t off_out, struct fuse_file_info *fi_out, size_t len,
                                    int flags)
{
        (void)ino_in, (void)off_in, (void)fi_in, (void)ino_out, (void)off_out, (void)fi_out;
        (void)len, (void)flags;
        reply_err(req, -EROFS);
}

/*
 * Left out on purpose, answered by libfuse or the kernel:
 * - forget, release, releasedir: nothing is allocated per lookup or per
 *   open, so there is nothing to drop (libfuse replies for us);
 * - getxattr, listxattr: volumes carry no xattrs.  ENOSYS makes the kernel
 *   remember that and answer EOPNOTSUPP itself, instead of a round trip
 *   per file for every `ls -l` or `cp -a`;
 * - flush, fsync, fsyncdir: nothing is ever dirty (ENOSYS is remembered too);
 * - locks: the kernel handles them locally.
 */
const struct fuse_lowlevel_ops cairnfs_ops = {
        .init = cairnfs_init,
        .lookup = cairnfs_lookup,
        .getattr = cairnfs_getattr,
        .readlink = cairnfs_readlink,
        .open = cairnfs_open,
        .read = cairnfs_read,
        .opendir = cairnfs_opendir,
        .readdir = cairnfs_readdir,
        .readdirplus = cairnfs_readdirplus,
        .statfs = cairnfs_statfs,
        .access = cairnfs_access,
        .setattr = cairnfs_setattr,
        .mknod = cairnfs_mknod,
        .mkdir = cairnfs_mkdir,
        .unlink = cairnfs_unlink,
        .rmdir = cairnfs_unlink,
        .symlink = cairnfs_symlink,
        .rename = cairnfs_rename,
        .link = cairnfs_link,
        .write = cairnfs_write,
        .create = cairnfs_create,
        .setxattr = cairnfs_setxattr,
        .removexattr = cairnfs_removexattr,
        .fallocate = cairnfs_fallocate,
        .copy_file_range = cairnfs_copy_file_range,
};
