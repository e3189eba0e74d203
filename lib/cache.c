/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node-local chunk cache (layout and entry format: docs/FORMAT.md).
 *
 * Entries are immutable and content-addressed, so sharing the directory
 * between processes needs no locking for reads and writes: a writer names
 * its entry with renameat2(RENAME_NOREPLACE), so of two processes caching
 * the same chunk one wins and the other drops its copy.  A header CRC-32C
 * replaces re-hashing on every hit; anything that does not check out is
 * unlinked and treated as a miss, so the caller refetches and re-verifies.
 *
 * Space accounting lives in DIR/usage, one page mapped shared by every
 * process, holding an atomic byte counter.  A writer reserves its entry's
 * bytes with a compare-and-swap that fails rather than pass the limit, so
 * the limit holds at every instant; evictions (serialized by flock on the
 * same file) give bytes back after unlinking.  A crash between reserving
 * and writing only over-counts, which `cairn cache prune` reconciles.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "cairn/digest.h"

#include "cairn/cache.h"
#include "cairn/crc32c.h"
#include "cairn/log.h"
#include "uring.h"

#define USAGE_MAGIC "CAIRNCU1"
#define USAGE_SIZE 4096u
/* How many shard directories one eviction round samples. */
#define EVICT_SAMPLE_SHARDS 8
/* An eviction frees at least this share of the limit, so evictions batch. */
#define EVICT_SLACK_DIVISOR 64
/* Temporary files older than this are leftovers of a crashed writer. */
#define TEMP_STALE_SECONDS 3600
/* A hit refreshes an entry's last-use time at most this often. */
#define TOUCH_INTERVAL_SECONDS 60

struct usage_page {
        char magic[8];
        uint32_t version;
        uint32_t initialized;        /* 1 once bytes reflects the entries on disk */
        _Atomic uint64_t bytes;      /* accounted bytes of chunk entries */
};
_Static_assert(sizeof(struct usage_page) <= USAGE_SIZE, "usage page");

struct cairn_cache {
        char *dir;
        int dir_fd;
        int usage_fd;
        struct usage_page *usage;    /* shared mapping of DIR/usage */
        uint64_t max_bytes;
        unsigned min_free_percent;
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

static int for_each_entry(struct cairn_cache *c,
                          int (*fn)(struct cairn_cache *c, const char *rel, const struct stat *st,
                                    void *ctx),
                          void *ctx);
static int count_entry(struct cairn_cache *c, const char *rel, const struct stat *st, void *ctx);

static void scan_aux(struct cairn_cache *c, struct cairn_cache_stats *s, bool remove_stale);

static int usage_open(struct cairn_cache *c)
{
        struct stat st;
        c->usage_fd = openat(c->dir_fd, "usage", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (c->usage_fd < 0)
                return -errno;
        if (fstat(c->usage_fd, &st) < 0)
                return -errno;
        if (st.st_size < (off_t)USAGE_SIZE && ftruncate(c->usage_fd, USAGE_SIZE) < 0)
                return -errno;
        void *p = mmap(NULL, USAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->usage_fd, 0);
        if (p == MAP_FAILED)
                return -errno;
        c->usage = p;
        if (memcmp(c->usage->magic, USAGE_MAGIC, 8) != 0) {
                /* New (or foreign) usage page: set it up once, under the lock. */
                flock(c->usage_fd, LOCK_EX);
                if (memcmp(c->usage->magic, USAGE_MAGIC, 8) != 0) {
                        /*
                         * Entries written without accounting (the usage file was
                         * lost) are counted once; a new cache has none.
                         */
                        struct cairn_cache_stats found = {0};
                        for_each_entry(c, count_entry, &found);
                        atomic_store(&c->usage->bytes, found.bytes);
                        c->usage->version = 1;
                        c->usage->initialized = 1;
                        memcpy(c->usage->magic, USAGE_MAGIC, 8);
                }
                flock(c->usage_fd, LOCK_UN);
        }
        return 0;
}

int cairn_cache_open_with(const char *dir, const struct cairn_cache_options *opts,
                          struct cairn_cache **ret_cache)
{
        struct cairn_cache *c;
        int r;

        r = mkdir_parents(dir);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->usage_fd = -1;
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
        if (opts) {
                c->max_bytes = opts->max_bytes;
                c->min_free_percent = opts->no_free_floor ? 0
                                      : opts->min_free_percent ? opts->min_free_percent
                                                               : CAIRN_CACHE_MIN_FREE_DEFAULT;
        } else {
                c->min_free_percent = CAIRN_CACHE_MIN_FREE_DEFAULT;
        }
        if (c->min_free_percent > 90) {
                r = -EINVAL;
                goto fail;
        }
        /* Subdirectories of chunks/ are made on first use: startup stays O(1). */
        static const char *const dirs[] = {"chunks", "manifests", "tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                r = mkdir_at(c->dir_fd, dirs[i]);
                if (r < 0)
                        goto fail;
        }
        r = usage_open(c);
        if (r < 0)
                goto fail;
        if (c->max_bytes) {
                /*
                 * The limit is for the whole directory: the usage page and the
                 * cached manifests count too, so chunk entries get what is left.
                 */
                struct cairn_cache_stats aux = {0};
                scan_aux(c, &aux, false);
                uint64_t fixed = USAGE_SIZE + ((aux.manifest_bytes + 4095) & ~(uint64_t)4095) +
                                 aux.manifests * 4096;
                c->max_bytes = c->max_bytes > fixed ? c->max_bytes - fixed : 1;
        }
        *ret_cache = c;
        return 0;
fail:
        cairn_cache_free(c);
        return r;
}

int cairn_cache_open(const char *dir, struct cairn_cache **ret_cache)
{
        return cairn_cache_open_with(dir, NULL, ret_cache);
}

void cairn_cache_free(struct cairn_cache *cache)
{
        if (!cache)
                return;
        if (cache->usage)
                munmap(cache->usage, USAGE_SIZE);
        if (cache->usage_fd >= 0)
                close(cache->usage_fd);
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

uint64_t cairn_cache_entry_bytes(uint32_t size)
{
        return ((uint64_t)CAIRN_CACHE_ENTRY_HEADER_SIZE + size + 4095) & ~(uint64_t)4095;
}

/* Accounted bytes of an entry file of st_size bytes (what its writer reserved). */
static uint64_t file_entry_bytes(off_t st_size)
{
        uint64_t data = st_size > (off_t)CAIRN_CACHE_ENTRY_HEADER_SIZE
                                ? (uint64_t)st_size - CAIRN_CACHE_ENTRY_HEADER_SIZE
                                : 0;
        return cairn_cache_entry_bytes(data > UINT32_MAX ? UINT32_MAX : (uint32_t)data);
}

uint64_t cairn_cache_usage(const struct cairn_cache *cache)
{
        return atomic_load(&cache->usage->bytes);
}

static void usage_sub(struct cairn_cache *c, uint64_t n)
{
        uint64_t cur = atomic_load(&c->usage->bytes);
        /* Never wrap below zero: an over-count is safe, an under-count is not. */
        while (!atomic_compare_exchange_weak(&c->usage->bytes, &cur, cur > n ? cur - n : 0))
                ;
}

static bool is_entry_name(const char *name)
{
        if (strlen(name) != CAIRN_DIGEST_HEX_LEN)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

/* Removes one entry and gives its bytes back.  rel: "chunks/xx/<hex>". */
static int entry_remove(struct cairn_cache *c, const char *rel, off_t st_size)
{
        if (unlinkat(c->dir_fd, rel, 0) < 0)
                return -errno;
        usage_sub(c, file_entry_bytes(st_size));
        return 0;
}

/* True when writing need more bytes would eat into the free-space floor. */
static bool below_floor(struct cairn_cache *c, uint64_t need)
{
        struct statvfs sv;
        if (!c->min_free_percent || fstatvfs(c->dir_fd, &sv) < 0)
                return false;
        uint64_t total = (uint64_t)sv.f_blocks * sv.f_frsize;
        uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        return avail < total / 100 * c->min_free_percent + need;
}

struct candidate {
        char rel[96];
        struct timespec mtime;
        off_t size;
};

static int candidate_cmp(const void *a, const void *b)
{
        const struct candidate *x = a, *y = b;
        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
        if (x->mtime.tv_nsec != y->mtime.tv_nsec)
                return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
        return 0;
}

/*
 * Lists the entries of shard dir "chunks/xx", appending to *cands.
 * Returns the number added or -errno.
 */
static int shard_list(struct cairn_cache *c, unsigned shard, struct candidate **cands, size_t *n,
                      size_t *cap)
{
        char dir[16];
        snprintf(dir, sizeof(dir), "chunks/%02x", shard);
        int fd = openat(c->dir_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        int added = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                struct stat st;
                if (!is_entry_name(de->d_name) ||
                    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (*n == *cap) {
                        size_t ncap = *cap ? *cap * 2 : 256;
                        struct candidate *p = realloc(*cands, ncap * sizeof(*p));
                        if (!p) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        *cands = p;
                        *cap = ncap;
                }
                struct candidate *cd = &(*cands)[(*n)++];
                snprintf(cd->rel, sizeof(cd->rel), "%.15s/%.64s", dir, de->d_name);
                cd->mtime = st.st_mtim;
                cd->size = st.st_size;
                added++;
        }
        closedir(d);
        return added;
}

/*
 * One eviction round, with the usage lock held: samples shard directories
 * (random ones first, more until enough candidates are seen), then removes
 * the least recently used of them until want bytes are freed.  Sampling
 * keeps the cost independent of the cache size; it approximates LRU the
 * way sampled eviction in caches like Redis does.
 */
static uint64_t evict_round(struct cairn_cache *c, uint64_t want, struct cairn_cache_stats *st)
{
        struct candidate *cands = NULL;
        size_t n = 0, cap = 0;
        uint64_t freed = 0;
        uint8_t start;

        if (getentropy(&start, 1) < 0)
                start = (uint8_t)time(NULL);
        for (unsigned i = 0; i < 256; i++) {
                if (i >= EVICT_SAMPLE_SHARDS && n >= 64)
                        break;
                if (shard_list(c, (start + i * 97u) % 256u, &cands, &n, &cap) < 0)
                        break;
        }
        if (n > 1) /* qsort(NULL, 0) is undefined */
                qsort(cands, n, sizeof(*cands), candidate_cmp);
        for (size_t i = 0; i < n && freed < want; i++) {
                if (entry_remove(c, cands[i].rel, cands[i].size) < 0)
                        continue;
                freed += file_entry_bytes(cands[i].size);
                if (st) {
                        st->evicted++;
                        st->evicted_bytes += file_entry_bytes(cands[i].size);
                }
        }
        free(cands);
        return freed;
}

/*
 * Reserves need bytes for a new entry, evicting as needed.  The counter
 * only ever moves past a value that fits the limit, so concurrent writers
 * in any process cannot overshoot together.  -ENOSPC when no room can be
 * made (the caller then simply does not cache).
 */
static int reserve(struct cairn_cache *c, uint64_t need)
{
        if (c->max_bytes && need > c->max_bytes)
                return -ENOSPC;
        for (int round = 0; round < 8; round++) {
                if (!below_floor(c, need)) {
                        if (!c->max_bytes) {
                                atomic_fetch_add(&c->usage->bytes, need);
                                return 0;
                        }
                        uint64_t cur = atomic_load(&c->usage->bytes);
                        while (cur + need <= c->max_bytes)
                                if (atomic_compare_exchange_weak(&c->usage->bytes, &cur,
                                                                 cur + need))
                                        return 0;
                }
                uint64_t slack = c->max_bytes ? c->max_bytes / EVICT_SLACK_DIVISOR : need;
                flock(c->usage_fd, LOCK_EX);
                uint64_t freed = evict_round(c, need + slack, NULL);
                flock(c->usage_fd, LOCK_UN);
                if (freed == 0 && round >= 2)
                        break;
        }
        return -ENOSPC;
}

int cairn_cache_get(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                    uint32_t size)
{
        char rel[96];
        struct entry_header h;
        struct stat st;
        int r = -ENOENT;

        entry_path(id, rel);
        int fd = openat(cache->dir_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ENOENT ? -ENOENT : -errno;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                close(fd);
                return r;
        }

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
        bool intact = got == want && st.st_size == (off_t)want &&
                      memcmp(h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8) == 0 && h.size == size &&
                      cairn_crc32c(0, buf, size) == h.crc;
        if (intact && time(NULL) - st.st_mtim.tv_sec > TOUCH_INTERVAL_SECONDS)
                futimens(fd, NULL); /* last use, for LRU eviction */
        close(fd);
        if (intact)
                return 0;
        /* Torn or damaged on disk: drop it; the caller refetches and re-verifies. */
        cairn_debug("cache: dropping damaged entry '%s'", rel);
        r = entry_remove(cache, rel, st.st_size);
        return r == -ENOENT || r >= 0 ? -ENOENT : r;
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
        uint64_t need = cairn_cache_entry_bytes(size);
        int r;

        entry_path(id, rel);
        if (faccessat(cache->dir_fd, rel, F_OK, 0) == 0)
                return 0;
        r = reserve(cache, need);
        if (r < 0)
                return r;

        memcpy(h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8);
        h.size = size;
        h.crc = cairn_crc32c(0, data, size);
        uint64_t rnd;
        if (getentropy(&rnd, sizeof(rnd)) < 0) {
                r = -errno;
                goto fail;
        }
        snprintf(tmp, sizeof(tmp), "tmp/%d-%016llx", (int)getpid(), (unsigned long long)rnd);
        int fd = openat(cache->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)data, size}};
        size_t want = sizeof(h) + size;
        ssize_t n = pwritev(fd, iov, 2, 0);
        if (n < 0)
                r = -errno;
        else if ((size_t)n != want) /* short writes only happen when the disk is full */
                r = -ENOSPC;
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        if (r >= 0 && renameat2(cache->dir_fd, tmp, cache->dir_fd, rel, RENAME_NOREPLACE) < 0) {
                r = -errno;
                if (r == -ENOENT) {
                        snprintf(sub, sizeof(sub), "chunks/%.2s", rel + 7);
                        r = mkdir_at(cache->dir_fd, sub);
                        if (r >= 0 && renameat2(cache->dir_fd, tmp, cache->dir_fd, rel,
                                                RENAME_NOREPLACE) < 0)
                                r = -errno;
                }
                if (r == -EEXIST) /* another process cached it first: keep theirs */
                        r = 1;
        }
        if (r != 0)
                unlinkat(cache->dir_fd, tmp, 0);
        if (r == 1) {
                usage_sub(cache, need);
                return 0;
        }
        if (r < 0)
                usage_sub(cache, need);
        return r;
fail:
        usage_sub(cache, need);
        return r;
}

/* One entry of a batch on its way through the ring. */
struct put_op {
        char rel[96], tmp[64];
        struct entry_header h;
        struct iovec iov[2];
        size_t want;
        uint64_t need;     /* reserved bytes */
        int result;        /* first failure of the chain, or 0 */
        bool opened;       /* the direct descriptor slot holds the file */
        bool active;
};

static void put_op_fail(struct put_op *op, int r)
{
        if (op->result >= 0 && r != -ECANCELED)
                op->result = r;
}

void cairn_cache_put_batch(struct cairn_cache *cache, const struct cairn_cache_item *items,
                           size_t n, int *results)
{
        struct io_uring *ring = cairn_uring_thread();
        struct put_op *ops = NULL;
        size_t i;

        if (ring && n > 1 && n <= CAIRN_URING_SLOTS)
                ops = calloc(n, sizeof(*ops));
        if (!ops) {
                for (i = 0; i < n; i++)
                        results[i] = cairn_cache_put(cache, items[i].id, items[i].data,
                                                     items[i].size);
                return;
        }
        unsigned queued = 0;
        for (i = 0; i < n; i++) {
                struct put_op *op = &ops[i];
                results[i] = 0;
                entry_path(items[i].id, op->rel);
                if (faccessat(cache->dir_fd, op->rel, F_OK, 0) == 0)
                        continue;
                op->need = cairn_cache_entry_bytes(items[i].size);
                int r = reserve(cache, op->need);
                uint64_t rnd = 0;
                if (r >= 0 && getentropy(&rnd, sizeof(rnd)) < 0)
                        r = -errno;
                if (r < 0) {
                        if (r != -ENOSPC)
                                usage_sub(cache, op->need);
                        results[i] = r;
                        continue;
                }
                snprintf(op->tmp, sizeof(op->tmp), "tmp/%d-%016llx", (int)getpid(),
                         (unsigned long long)rnd);
                memcpy(op->h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8);
                op->h.size = items[i].size;
                op->h.crc = cairn_crc32c(0, items[i].data, items[i].size);
                op->iov[0] = (struct iovec){&op->h, sizeof(op->h)};
                op->iov[1] = (struct iovec){(void *)items[i].data, items[i].size};
                op->want = sizeof(op->h) + items[i].size;
                op->active = true;

                /* A direct descriptor takes no O_CLOEXEC: it is never in the fd table. */
                struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
                io_uring_prep_openat_direct(sqe, cache->dir_fd, op->tmp,
                                            O_WRONLY | O_CREAT | O_EXCL, 0644, (unsigned)i);
                sqe->flags |= IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 0);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_writev(sqe, (int)i, op->iov, 2, 0);
                sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 1);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_close_direct(sqe, (unsigned)i);
                sqe->flags |= IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 2);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_renameat(sqe, cache->dir_fd, op->tmp, cache->dir_fd, op->rel,
                                       RENAME_NOREPLACE);
                io_uring_sqe_set_data64(sqe, i << 2 | 3);
                queued += 4;
        }
        if (queued) {
                int r = io_uring_submit_and_wait(ring, queued);
                unsigned seen = 0;
                while (r >= 0 && seen < queued) {
                        struct io_uring_cqe *cqe;
                        r = io_uring_wait_cqe(ring, &cqe);
                        if (r < 0)
                                break;
                        uint64_t ud = io_uring_cqe_get_data64(cqe);
                        struct put_op *op = &ops[ud >> 2];
                        int res = cqe->res;
                        switch (ud & 3) {
                        case 0:
                                if (res >= 0)
                                        op->opened = true;
                                else
                                        put_op_fail(op, res);
                                break;
                        case 1:
                                if (res >= 0 && (size_t)res != op->want)
                                        res = -ENOSPC; /* short writes mean a full disk */
                                if (res < 0)
                                        put_op_fail(op, res);
                                break;
                        case 2:
                                if (res >= 0)
                                        op->opened = false;
                                else
                                        put_op_fail(op, res);
                                break;
                        default:
                                if (res < 0 && op->result >= 0)
                                        op->result = res;
                        }
                        io_uring_cqe_seen(ring, cqe);
                        seen++;
                }
                if (r < 0) /* the ring broke: nothing is known, redo these the plain way */
                        for (i = 0; i < n; i++)
                                if (ops[i].active && ops[i].result >= 0)
                                        ops[i].result = -EAGAIN;
        }
        for (i = 0; i < n; i++) {
                struct put_op *op = &ops[i];
                if (!op->active)
                        continue;
                if (op->opened) {
                        /* A chain that broke after the open leaves the slot in use. */
                        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
                        io_uring_prep_close_direct(sqe, (unsigned)i);
                        io_uring_sqe_set_data64(sqe, UINT64_MAX);
                        struct io_uring_cqe *cqe;
                        if (io_uring_submit_and_wait(ring, 1) >= 0 &&
                            io_uring_wait_cqe(ring, &cqe) == 0)
                                io_uring_cqe_seen(ring, cqe);
                }
                int r = op->result;
                if (r == -ENOENT) {
                        /* First entry of its shard: make the directory, then rename. */
                        char sub[16];
                        snprintf(sub, sizeof(sub), "chunks/%.2s", op->rel + 7);
                        r = mkdir_at(cache->dir_fd, sub);
                        if (r >= 0 && renameat2(cache->dir_fd, op->tmp, cache->dir_fd, op->rel,
                                                RENAME_NOREPLACE) < 0)
                                r = -errno;
                }
                if (r == -EAGAIN) {
                        unlinkat(cache->dir_fd, op->tmp, 0);
                        usage_sub(cache, op->need);
                        results[i] = cairn_cache_put(cache, items[i].id, items[i].data,
                                                     items[i].size);
                        continue;
                }
                if (r == -EEXIST) /* another process cached it first: keep theirs */
                        r = 1;
                if (r != 0) {
                        unlinkat(cache->dir_fd, op->tmp, 0);
                        usage_sub(cache, op->need);
                }
                results[i] = r == 1 ? 0 : r;
        }
        free(ops);
}

/* Calls fn for every chunk entry; stops at the first negative return. */
static int for_each_entry(struct cairn_cache *c,
                          int (*fn)(struct cairn_cache *c, const char *rel, const struct stat *st,
                                    void *ctx),
                          void *ctx)
{
        for (unsigned shard = 0; shard < 256; shard++) {
                char dir[16];
                snprintf(dir, sizeof(dir), "chunks/%02x", shard);
                int fd = openat(c->dir_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) {
                        if (errno == ENOENT)
                                continue;
                        return -errno;
                }
                DIR *d = fdopendir(fd);
                if (!d) {
                        close(fd);
                        return -errno;
                }
                struct dirent *de;
                int r = 0;
                while (r >= 0 && (de = readdir(d))) {
                        struct stat st;
                        char rel[96];
                        if (!is_entry_name(de->d_name) ||
                            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        snprintf(rel, sizeof(rel), "%.15s/%.64s", dir, de->d_name);
                        r = fn(c, rel, &st, ctx);
                }
                closedir(d);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int count_entry(struct cairn_cache *c, const char *rel, const struct stat *st, void *ctx)
{
        (void)c;
        (void)rel;
        struct cairn_cache_stats *s = ctx;
        s->entries++;
        s->bytes += file_entry_bytes(st->st_size);
        return 0;
}

/* Counts (and, when remove_stale, deletes old) files of DIR/tmp and manifests. */
static void scan_aux(struct cairn_cache *c, struct cairn_cache_stats *s, bool remove_stale)
{
        static const char *const dirs[] = {"manifests", "tmp"};
        for (int i = 0; i < 2; i++) {
                int fd = openat(c->dir_fd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                DIR *d = fdopendir(fd);
                if (!d) {
                        close(fd);
                        continue;
                }
                struct dirent *de;
                while ((de = readdir(d))) {
                        struct stat st;
                        if (de->d_name[0] == '.' ||
                            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        if (i == 0) {
                                s->manifests++;
                                s->manifest_bytes += (uint64_t)st.st_size;
                        } else if (remove_stale &&
                                   time(NULL) - st.st_mtim.tv_sec > TEMP_STALE_SECONDS) {
                                unlinkat(dirfd(d), de->d_name, 0);
                        } else {
                                s->temp_files++;
                        }
                }
                closedir(d);
        }
}

int cairn_cache_scan(struct cairn_cache *cache, struct cairn_cache_stats *ret_stats)
{
        struct cairn_cache_stats s = {.accounted_bytes = cairn_cache_usage(cache)};
        int r = for_each_entry(cache, count_entry, &s);
        if (r < 0)
                return r;
        scan_aux(cache, &s, false);
        *ret_stats = s;
        return 0;
}

int cairn_cache_prune(struct cairn_cache *cache, uint64_t target_bytes,
                      struct cairn_cache_stats *ret_stats)
{
        struct cairn_cache_stats s = {.accounted_bytes = cairn_cache_usage(cache)};
        struct candidate *cands = NULL;
        size_t n = 0, cap = 0;
        int r = 0;

        flock(cache->usage_fd, LOCK_EX);
        for (unsigned shard = 0; shard < 256 && r >= 0; shard++)
                r = shard_list(cache, shard, &cands, &n, &cap);
        if (r < 0)
                goto out;
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++)
                total += file_entry_bytes(cands[i].size);
        if (n > 1) /* qsort(NULL, 0) is undefined */
                qsort(cands, n, sizeof(*cands), candidate_cmp);
        for (size_t i = 0; i < n && total > target_bytes; i++) {
                if (unlinkat(cache->dir_fd, cands[i].rel, 0) < 0)
                        continue;
                total -= file_entry_bytes(cands[i].size);
                s.evicted++;
                s.evicted_bytes += file_entry_bytes(cands[i].size);
        }
        s.entries = n - s.evicted;
        s.bytes = total;
        /* Reconcile: the counter becomes what is on disk. */
        atomic_store(&cache->usage->bytes, total);
        cache->usage->initialized = 1;
        scan_aux(cache, &s, true);
        r = 0;
out:
        flock(cache->usage_fd, LOCK_UN);
        free(cands);
        if (r >= 0)
                *ret_stats = s;
        return r;
}

struct verify_ctx {
        struct cairn_cache_stats *s;
        void (*progress)(const struct cairn_cache_stats *st, void *ctx);
        void *pctx;
        uint8_t *buf;
        size_t cap;
};

static int verify_entry(struct cairn_cache *c, const char *rel, const struct stat *st, void *ctx)
{
        struct verify_ctx *v = ctx;
        struct entry_header h;
        struct cairn_digest want, got;
        bool good = false;

        v->s->checked++;
        if (st->st_size >= (off_t)sizeof(h) &&
            (uint64_t)st->st_size <= sizeof(h) + (uint64_t)v->cap) {
                int fd = openat(c->dir_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd >= 0) {
                        size_t len = (size_t)st->st_size;
                        ssize_t n = pread(fd, v->buf, len, 0);
                        close(fd);
                        if (n == (ssize_t)len) {
                                memcpy(&h, v->buf, sizeof(h));
                                const uint8_t *data = v->buf + sizeof(h);
                                good = memcmp(h.magic, CAIRN_CACHE_ENTRY_MAGIC, 8) == 0 &&
                                       h.size == len - sizeof(h) &&
                                       cairn_crc32c(0, data, h.size) == h.crc &&
                                       cairn_digest_from_hex(strrchr(rel, '/') + 1,
                                                             CAIRN_DIGEST_HEX_LEN, &want) == 0;
                                if (good) {
                                        cairn_sha256(data, h.size, &got);
                                        good = cairn_digest_equal(&want, &got);
                                }
                        }
                }
        }
        if (!good) {
                v->s->damaged++;
                entry_remove(c, rel, st->st_size);
        } else {
                v->s->entries++;
                v->s->bytes += file_entry_bytes(st->st_size);
        }
        if (v->progress)
                v->progress(v->s, v->pctx);
        return 0;
}

int cairn_cache_verify(struct cairn_cache *cache,
                       void (*progress)(const struct cairn_cache_stats *st, void *ctx), void *ctx,
                       struct cairn_cache_stats *ret_stats)
{
        struct cairn_cache_stats s = {.accounted_bytes = cairn_cache_usage(cache)};
        struct verify_ctx v = {.s = &s, .progress = progress, .pctx = ctx};
        v.cap = CAIRN_CACHE_ENTRY_HEADER_SIZE + (64u << 20);
        v.buf = malloc(v.cap + CAIRN_CACHE_ENTRY_HEADER_SIZE);
        if (!v.buf)
                return -ENOMEM;
        int r = for_each_entry(cache, verify_entry, &v);
        free(v.buf);
        if (r < 0)
                return r;
        *ret_stats = s;
        return 0;
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
