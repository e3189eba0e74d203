/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node-local chunk cache (layout and entry format: docs/FORMAT.md).
 *
 * Entries are immutable and content-addressed, so sharing the directory
 * between processes needs no locking: writers race only to rename
 * identical content into place.  A header CRC-32C replaces re-hashing on
 * every hit; anything that does not check out is unlinked and treated as
 * a miss, so the caller refetches and re-verifies.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cairn/cache.h"
#include "cairn/crc32c.h"
#include "cairn/log.h"

struct cairn_cache {
        char *dir;
        int dir_fd;
};

struct entry_header {
        char magic[8];
        uint32_t size;
        uint32_t crc;
};
_Static_assert(sizeof(struct entry_header) == CAIRN_CACHE_ENTRY_HEADER_SIZE, "entry header");

static int mkdir_at(int dirfd, const char *rel)
{
        if (mkdirat(dirfd, rel, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* mkdir -p: the default $XDG_CACHE_HOME/cairn may sit in a directory not made yet. */
static int mkdir_parents(const char *dir)
{
        char path[PATH_MAX];
        size_t len = strlen(dir);
        if (len == 0 || len >= sizeof(path))
                return -ENAMETOOLONG;
        memcpy(path, dir, len + 1);
        for (char *p = path + 1;; p++) {
                if (*p != '/' && *p != '\0')
                        continue;
                char saved = *p;
                *p = '\0';
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *p = saved;
                if (!saved)
                        return 0;
        }
}

int cairn_cache_open(const char *dir, struct cairn_cache **ret_cache)
{
        struct cairn_cache *c;
        int r;

        r = mkdir_parents(dir);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->dir_fd < 0) {
                r = -errno;
                goto fail;
        }
        c->dir = strdup(dir);
        if (!c->dir) {
                r = -ENOMEM;
                goto fail;
        }
        /* Subdirectories of chunks/ are made on first use: startup stays O(1). */
        static const char *const dirs[] = {"chunks", "manifests", "tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                r = mkdir_at(c->dir_fd, dirs[i]);
                if (r < 0)
                        goto fail;
        }
        *ret_cache = c;
        return 0;
fail:
        cairn_cache_free(c);
        return r;
}

void cairn_cache_free(struct cairn_cache *cache)
{
        if (!cache)
                return;
        if (cache->dir_fd >= 0)
                close(cache->dir_fd);
        free(cache->dir);
        free(cache);
}

const char *cairn_cache_dir(const struct cairn_cache *cache)
{
        return cache->dir;
}

static void entry_path(const struct cairn_digest *id, char buf[static 96])
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(id, hex);
        snprintf(buf, 96, "chunks/%.2s/%s", hex, hex);
}

int cairn_cache_get(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                    uint32_t size)
{
        char rel[96];
        struct entry_header h;
        int r = -ENOENT;

        entry_path(id, rel);
        int fd = openat(cache->dir_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ENOENT ? -ENOENT : -errno;

        struct iovec iov[2] = {{&h, sizeof(h)}, {buf, size}};
        size_t want = sizeof(h) + size, got = 0;
        while (got < want) {
                ssize_t n = preadv(fd, iov, 2, (off_t)got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
                /* Advance the iovecs past what was read. */
                size_t skip = (size_t)n;
                for (int i = 0; i < 2 && skip; i++) {
                        size_t take = skip < iov[i].iov_len ? skip : iov[i].iov_len;
                        iov[i].iov_base = (uint8_t *)iov[i].iov_base + take;
                        iov[i].iov_len -= take;
                        skip -= take;
                }
        }
        char extra;
        bool intact = got == want && memcmp(h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8) == 0 &&
                      h.size == size && pread(fd, &extra, 1, (off_t)want) == 0 &&
                      cairn_crc32c(0, buf, size) == h.crc;
        close(fd);
        if (intact)
                return 0;
        /* Torn or damaged on disk: drop it; the caller refetches and re-verifies. */
        cairn_debug("cache: dropping damaged entry '%s'", rel);
        if (unlinkat(cache->dir_fd, rel, 0) < 0 && errno != ENOENT)
                r = -errno;
        return r == -ENOENT ? -ENOENT : r;
}

bool cairn_cache_contains(struct cairn_cache *cache, const struct cairn_digest *id)
{
        char rel[96];
        entry_path(id, rel);
        return faccessat(cache->dir_fd, rel, F_OK, 0) == 0;
}

int cairn_cache_put(struct cairn_cache *cache, const struct cairn_digest *id, const void *data,
                    uint32_t size)
{
        char rel[96], tmp[64], sub[16];
        struct entry_header h;
        int r = 0;

        entry_path(id, rel);
        memcpy(h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8);
        h.size = size;
        h.crc = cairn_crc32c(0, data, size);

        uint64_t rnd;
        if (getentropy(&rnd, sizeof(rnd)) < 0)
                return -errno;
        snprintf(tmp, sizeof(tmp), "tmp/%d-%016llx", (int)getpid(), (unsigned long long)rnd);
        int fd = openat(cache->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)data, size}};
        size_t want = sizeof(h) + size;
        ssize_t n = pwritev(fd, iov, 2, 0);
        if (n < 0)
                r = -errno;
        else if ((size_t)n != want) /* short writes only happen when the disk is full */
                r = -ENOSPC;
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        if (r >= 0 && renameat(cache->dir_fd, tmp, cache->dir_fd, rel) < 0) {
                r = -errno;
                if (r == -ENOENT) {
                        snprintf(sub, sizeof(sub), "chunks/%.2s", rel + 7);
                        r = mkdir_at(cache->dir_fd, sub);
                        if (r >= 0 && renameat(cache->dir_fd, tmp, cache->dir_fd, rel) < 0)
                                r = -errno;
                }
        }
        if (r < 0)
                unlinkat(cache->dir_fd, tmp, 0);
        return r;
}

int cairn_cache_manifest_path(const struct cairn_cache *cache, const struct cairn_digest *d,
                              char *buf, size_t len)
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(d, hex);
        int n = snprintf(buf, len, "%s/manifests/%s", cache->dir, hex);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cairn_cache_default_dir(char *buf, size_t len)
{
        int n;
        if (geteuid() == 0) {
                n = snprintf(buf, len, "/var/cache/cairn");
        } else {
                const char *xdg = getenv("XDG_CACHE_HOME");
                const char *home = getenv("HOME");
                if (xdg && xdg[0] == '/')
                        n = snprintf(buf, len, "%s/cairn", xdg);
                else if (home && home[0] == '/')
                        n = snprintf(buf, len, "%s/.cache/cairn", home);
                else
                        return -ENOENT;
        }
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
