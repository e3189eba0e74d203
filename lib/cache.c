/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node-local chunk cache (layout and entry format: docs/FORMAT.md).
 *
 * Entries are immutable and content-addressed, so sharing the directory
 * between processes needs no locking for reads and writes: a writer names
 * its entry with renameat2(RENAME_NOREPLACE), so of two processes caching
 * the same chunk one wins and the other drops its copy.  A trailer CRC-32C
 * replaces re-hashing on every hit; anything that does not check out is
 * unlinked and treated as a miss, so the caller refetches and re-verifies.
 *
 * Entry files are whole 4 KiB blocks with the data at offset 0, so they
 * are read and written with O_DIRECT: the bytes go between the disk and
 * the caller's buffer without a copy into the page cache (which costs CPU
 * and, on slow writeback, throughput) and without caching them twice (the
 * FUSE file's pages are in the page cache already).  An aligned buffer is
 * used in place; only the last partial block, the padding and the trailer
 * go through a small aligned block of our own, so a put never writes into
 * the caller's buffer.  Where O_DIRECT is refused (probed at open, and
 * rechecked per call on EINVAL) the same layout goes through the page cache.
 *
 * Space accounting lives in DIR/usage, one page mapped shared by every
 * process, holding an atomic byte counter.  A writer reserves its entry's
 * bytes with a compare-and-swap that fails rather than pass the limit, so
 * the limit holds at every instant; evictions (serialized by flock on the
 * same file) give bytes back after unlinking.  A crash between reserving
 * and writing only over-counts, which `cairn cache prune` reconciles.
 */
#include <endian.h>
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
_Static_assert(CAIRN_CACHE_FIXED_BYTES > USAGE_SIZE, "the usage page is counted");
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
        bool direct;                 /* O_DIRECT works in DIR/tmp (probed at open) */
};

/* The last 16 bytes of an entry file; both numbers little-endian. */
struct entry_trailer {
        char magic[8];
        uint32_t size;
        uint32_t crc;
};
_Static_assert(sizeof(struct entry_trailer) == CAIRN_CACHE_ENTRY_TRAILER_SIZE, "entry trailer");

#define IO_ALIGN CAIRN_CACHE_IO_ALIGN
/* The bytes past the last whole data block: the rest of the data, padding, trailer. */
#define TAIL_MAX (2 * IO_ALIGN)

static const uint8_t zero_block[IO_ALIGN];

static bool io_aligned(const void *p)
{
        return ((uintptr_t)p & (IO_ALIGN - 1)) == 0;
}

/*
 * How one entry file's bytes [0, io) map onto memory for one read or
 * write.  Bytes [0, head) (whole blocks of data) are in the caller's
 * buffer; bytes [head, io) are at end: the caller's buffer too when it
 * has room for them (reads), else a TAIL_MAX block of ours, else, for
 * O_DIRECT with an unaligned buffer, a bounce copy of the whole entry.
 */
struct xfer {
        struct iovec iov[2];
        int niov;
        size_t io, head;
        uint8_t *user;
        uint8_t *end;
        uint8_t *bounce;   /* owned, or NULL */
        uint32_t size;
};

static void xfer_done(struct xfer *x)
{
        free(x->bounce);
        x->bounce = NULL;
}

static void xfer_iov(struct xfer *x)
{
        x->niov = 0;
        if (x->bounce) {
                x->iov[x->niov++] = (struct iovec){x->bounce, x->io};
        } else if (x->end == x->user + x->head) {
                x->iov[x->niov++] = (struct iovec){x->user, x->io};
        } else {
                if (x->head)
                        x->iov[x->niov++] = (struct iovec){x->user, x->head};
                x->iov[x->niov++] = (struct iovec){x->end, x->io - x->head};
        }
}

/* A write of data: never writes into it.  tail: TAIL_MAX bytes, aligned. */
static int xfer_write_setup(struct xfer *x, const void *data, uint32_t size, uint32_t crc,
                            bool direct, uint8_t *tail)
{
        *x = (struct xfer){.io = cairn_cache_io_size(size), .user = (uint8_t *)data,
                           .size = size, .head = size & ~(size_t)(IO_ALIGN - 1)};
        if (direct && !io_aligned(data)) {
                x->bounce = aligned_alloc(IO_ALIGN, x->io);
                if (!x->bounce)
                        return -ENOMEM;
                x->head = 0;
                x->end = x->bounce;
        } else {
                x->end = tail;
        }
        memcpy(x->end, x->user + x->head, size - x->head);
        size_t trailer_at = x->io - x->head - sizeof(struct entry_trailer);
        memset(x->end + (size - x->head), 0, trailer_at - (size - x->head));
        struct entry_trailer t = {.size = htole32(size), .crc = htole32(crc)};
        memcpy(t.magic, CAIRN_CACHE_ENTRY_MAGIC, 8);
        memcpy(x->end + trailer_at, &t, sizeof(t));
        xfer_iov(x);
        return 0;
}

/* A read into buf of cap bytes (see cairn_cache_get_into for when it is in place). */
static int xfer_read_setup(struct xfer *x, void *buf, size_t cap, uint32_t size, bool direct,
                           uint8_t *tail)
{
        *x = (struct xfer){.io = cairn_cache_io_size(size), .user = buf, .size = size,
                           .head = size & ~(size_t)(IO_ALIGN - 1)};
        bool usable = !direct || io_aligned(buf);
        if (usable && cap >= x->io) {
                x->end = x->user + x->head;
        } else if (usable) {
                x->end = tail;
        } else {
                x->bounce = aligned_alloc(IO_ALIGN, x->io);
                if (!x->bounce)
                        return -ENOMEM;
                x->head = 0;
                x->end = x->bounce;
        }
        xfer_iov(x);
        return 0;
}

/*
 * After a read of all io bytes: checks padding and trailer, moves what
 * did not land in place into the caller's buffer and checks the CRC.
 */
static bool xfer_read_check(struct xfer *x)
{
        size_t trailer_at = x->io - x->head - sizeof(struct entry_trailer);
        size_t data_end = x->size - x->head;
        struct entry_trailer t;
        memcpy(&t, x->end + trailer_at, sizeof(t));
        if (memcmp(t.magic, CAIRN_CACHE_ENTRY_MAGIC, 8) != 0 || le32toh(t.size) != x->size ||
            memcmp(x->end + data_end, zero_block, trailer_at - data_end) != 0)
                return false;
        if (x->end != x->user + x->head)
                memcpy(x->user + x->head, x->end, data_end);
        return cairn_crc32c(0, x->user, x->size) == le32toh(t.crc);
}

/*
 * preadv/pwritev of the whole transfer from offset 0, resumed after
 * partial transfers.  Returns the bytes moved (short only at end of file,
 * or a full disk) or -errno.
 */
static ssize_t xfer_rw(int fd, const struct xfer *x, bool write)
{
        struct iovec iov[2];
        memcpy(iov, x->iov, sizeof(iov));
        size_t done = 0;
        while (done < x->io) {
                int first = iov[0].iov_len ? 0 : 1;
                ssize_t n = write ? pwritev(fd, iov + first, x->niov - first, (off_t)done)
                                  : preadv(fd, iov + first, x->niov - first, (off_t)done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                done += (size_t)n;
                size_t skip = (size_t)n;
                for (int i = 0; i < x->niov && skip; i++) {
                        size_t take = skip < iov[i].iov_len ? skip : iov[i].iov_len;
                        iov[i].iov_base = (uint8_t *)iov[i].iov_base + take;
                        iov[i].iov_len -= take;
                        skip -= take;
                }
        }
        return (ssize_t)done;
}

/* Drops O_DIRECT from an open file, for a filesystem that refused it mid-way. */
static int clear_direct(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
                return -errno;
        return 0;
}

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

/*
 * Whether O_DIRECT works for entries here: a block written and read back
 * in DIR/tmp.  tmpfs (before Linux 6.6) and some FUSE or network
 * filesystems refuse it; entries then go through the page cache, in the
 * same layout.  The probe file starts with '.' so that a crash mid-probe
 * leaves nothing that `prune` counts as an interrupted write.
 */
static bool probe_direct(struct cairn_cache *c)
{
        char name[64];
        uint64_t rnd = 0;
        bool ok = false;
        if (getentropy(&rnd, sizeof(rnd)) < 0)
                rnd = (uint64_t)time(NULL);
        snprintf(name, sizeof(name), "tmp/.direct-%d-%016llx", (int)getpid(),
                 (unsigned long long)rnd);
        int fd = openat(c->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
        if (fd < 0) {
                if (errno == EINVAL) /* refused after creating it */
                        unlinkat(c->dir_fd, name, 0);
                return false;
        }
        uint8_t *block = aligned_alloc(IO_ALIGN, IO_ALIGN);
        if (block) {
                memset(block, 0x5a, IO_ALIGN);
                ok = pwrite(fd, block, IO_ALIGN, 0) == (ssize_t)IO_ALIGN &&
                     pread(fd, block, IO_ALIGN, 0) == (ssize_t)IO_ALIGN && block[IO_ALIGN - 1] == 0x5a;
                free(block);
        }
        close(fd);
        unlinkat(c->dir_fd, name, 0);
        return ok;
}

/* Disk taken by count manifest files of bytes in all: whole blocks, and one more each. */
static uint64_t manifests_footprint(uint64_t bytes, uint64_t count)
{
        return ((bytes + 4095) & ~(uint64_t)4095) + count * 4096;
}

/* Takes n bytes off the chunk entries' share of the size limit (never to 0: no limit). */
static void limit_take(struct cairn_cache *c, uint64_t n)
{
        c->max_bytes = c->max_bytes > n ? c->max_bytes - n : 1;
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
        c->direct = !(opts && opts->buffered_io) && probe_direct(c);
        cairn_debug("cache: %s I/O for entries in '%s'", c->direct ? "O_DIRECT" : "buffered", dir);
        if (c->max_bytes) {
                /*
                 * The limit is for the whole directory: the usage page and the
                 * cached manifests count too, so chunk entries get what is left.
                 */
                struct cairn_cache_stats aux = {0};
                scan_aux(c, &aux, false);
                limit_take(c, CAIRN_CACHE_FIXED_BYTES +
                                   manifests_footprint(aux.manifest_bytes, aux.manifests));
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

bool cairn_cache_direct_io(const struct cairn_cache *cache)
{
        return cache->direct;
}

static void entry_path(const struct cairn_digest *id, char buf[static 96])
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(id, hex);
        snprintf(buf, 96, "chunks/%.2s/%s", hex, hex);
}

uint64_t cairn_cache_entry_bytes(uint32_t size)
{
        return cairn_cache_io_size(size);
}

/*
 * Accounted bytes of an entry file of st_size bytes (what its writer
 * reserved): its length for an intact entry; for a damaged one (or a v1
 * entry, whose writer reserved its length rounded up the same way) the
 * length rounded up to a block, at least one block.
 */
static uint64_t file_entry_bytes(off_t st_size)
{
        uint64_t len = st_size > 0 ? (uint64_t)st_size : 0;
        len = (len + IO_ALIGN - 1) & ~(uint64_t)(IO_ALIGN - 1);
        return len ? len : IO_ALIGN;
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

/*
 * Opens rel under the cache directory, with O_DIRECT while *direct; a
 * filesystem that refuses O_DIRECT (EINVAL) gets the same call without it,
 * and *direct turns false for the rest of this call.
 */
static int open_entry(struct cairn_cache *c, const char *rel, int flags, bool *direct)
{
        if (*direct) {
                int fd = openat(c->dir_fd, rel, flags | O_DIRECT, 0644);
                if (fd >= 0)
                        return fd;
                if (errno != EINVAL)
                        return -errno;
                /* The refusal may come after the file was created: ours, by its unique name. */
                if (flags & O_CREAT)
                        unlinkat(c->dir_fd, rel, 0);
                *direct = false;
        }
        int fd = openat(c->dir_fd, rel, flags, 0644);
        return fd < 0 ? -errno : fd;
}

/*
 * Drops a damaged entry of a size-byte chunk, st_size bytes long: the
 * caller refetches and re-verifies.  Its writer reserved
 * cairn_cache_entry_bytes(size) (the name fixes the content, so the size
 * the reader knows is the writer's, for v1 entries too) unless the caller
 * asked with a wrong size, and the file's length may be part of the
 * damage; the smaller guess goes back, since giving back more than was
 * reserved would let the cache grow past its limit.
 */
static int drop_damaged(struct cairn_cache *c, const char *rel, uint32_t size, off_t st_size)
{
        cairn_debug("cache: dropping damaged entry '%s'", rel);
        if (unlinkat(c->dir_fd, rel, 0) < 0)
                return errno == ENOENT ? -ENOENT : -errno;
        uint64_t reserved = cairn_cache_entry_bytes(size), by_length = file_entry_bytes(st_size);
        usage_sub(c, reserved < by_length ? reserved : by_length);
        return -ENOENT;
}

static int get_one(struct cairn_cache *cache, const char *rel, void *buf, size_t cap,
                   uint32_t size, bool direct)
{
        _Alignas(IO_ALIGN) uint8_t tail[TAIL_MAX];
        struct stat st;
        struct xfer x;
        bool intact = false;
        int r;

        int fd = open_entry(cache, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, &direct);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        /* A file of any other length is damaged (or of another version): no need to read it. */
        while (st.st_size == (off_t)cairn_cache_io_size(size)) {
                r = xfer_read_setup(&x, buf, cap, size, direct, tail);
                if (r < 0) {
                        close(fd);
                        return r;
                }
                ssize_t n = xfer_rw(fd, &x, false);
                if (n == -EINVAL && direct && clear_direct(fd) == 0) {
                        xfer_done(&x);
                        direct = false;
                        continue;
                }
                intact = n == (ssize_t)x.io && xfer_read_check(&x);
                xfer_done(&x);
                break;
        }
        if (intact && time(NULL) - st.st_mtim.tv_sec > TOUCH_INTERVAL_SECONDS)
                futimens(fd, NULL); /* last use, for LRU eviction */
        close(fd);
        if (intact)
                return 0;
        /* Torn or damaged on disk: drop it; the caller refetches and re-verifies. */
        return drop_damaged(cache, rel, size, st.st_size);
}

int cairn_cache_get_into(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                         size_t cap, uint32_t size)
{
        char rel[96];
        if (cap < size)
                return -EINVAL;
        entry_path(id, rel);
        return get_one(cache, rel, buf, cap, size, cache->direct);
}

int cairn_cache_get(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                    uint32_t size)
{
        return cairn_cache_get_into(cache, id, buf, size, size);
}

bool cairn_cache_contains(struct cairn_cache *cache, const struct cairn_digest *id)
{
        char rel[96];
        entry_path(id, rel);
        return faccessat(cache->dir_fd, rel, F_OK, 0) == 0;
}

/* Renames a written temporary file into place; 1 when another copy was there first. */
static int entry_publish(struct cairn_cache *cache, const char *tmp, const char *rel)
{
        if (renameat2(cache->dir_fd, tmp, cache->dir_fd, rel, RENAME_NOREPLACE) == 0)
                return 0;
        int r = -errno;
        if (r == -ENOENT) {
                /* First entry of its shard: make the directory, then rename. */
                char sub[16];
                snprintf(sub, sizeof(sub), "chunks/%.2s", rel + 7);
                r = mkdir_at(cache->dir_fd, sub);
                if (r >= 0 &&
                    renameat2(cache->dir_fd, tmp, cache->dir_fd, rel, RENAME_NOREPLACE) < 0)
                        r = -errno;
        }
        return r == -EEXIST ? 1 : r; /* another process cached it first: keep theirs */
}

static int put_one(struct cairn_cache *cache, const struct cairn_digest *id, const void *data,
                   uint32_t size, bool direct)
{
        _Alignas(IO_ALIGN) uint8_t tail[TAIL_MAX];
        char rel[96], tmp[64];
        uint64_t need = cairn_cache_entry_bytes(size);
        struct xfer x;
        int r;

        entry_path(id, rel);
        if (faccessat(cache->dir_fd, rel, F_OK, 0) == 0)
                return 0;
        r = reserve(cache, need);
        if (r < 0)
                return r;

        uint32_t crc = cairn_crc32c(0, data, size);
        uint64_t rnd;
        if (getentropy(&rnd, sizeof(rnd)) < 0) {
                r = -errno;
                usage_sub(cache, need);
                return r;
        }
        snprintf(tmp, sizeof(tmp), "tmp/%d-%016llx", (int)getpid(), (unsigned long long)rnd);
        int fd = open_entry(cache, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, &direct);
        if (fd < 0) {
                usage_sub(cache, need);
                return fd;
        }
        for (;;) {
                r = xfer_write_setup(&x, data, size, crc, direct, tail);
                if (r < 0)
                        break;
                ssize_t n = xfer_rw(fd, &x, true);
                xfer_done(&x);
                if (n == -EINVAL && direct && clear_direct(fd) == 0) {
                        direct = false;
                        continue;
                }
                if (n < 0)
                        r = (int)n;
                else if ((size_t)n != x.io) /* short writes only happen when the disk is full */
                        r = -ENOSPC;
                break;
        }
        /*
         * No fsync: a torn entry (power loss) fails its length, trailer or
         * CRC check and is refetched, which costs a fetch, never a wrong byte.
         */
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        if (r >= 0)
                r = entry_publish(cache, tmp, rel);
        if (r != 0) {
                unlinkat(cache->dir_fd, tmp, 0);
                usage_sub(cache, need);
        }
        return r == 1 ? 0 : r;
}

int cairn_cache_put(struct cairn_cache *cache, const struct cairn_digest *id, const void *data,
                    uint32_t size)
{
        return put_one(cache, id, data, size, cache->direct);
}

/* Waits for the next completion; a signal does not break the ring. */
static int ring_wait(struct io_uring *ring, struct io_uring_cqe **cqe)
{
        int r;
        do
                r = io_uring_wait_cqe(ring, cqe);
        while (r == -EINTR);
        return r;
}

/* Closes a direct descriptor that a broken chain left open. */
static void ring_close_slot(struct io_uring *ring, unsigned slot)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe)
                return;
        io_uring_prep_close_direct(sqe, slot);
        io_uring_sqe_set_data64(sqe, UINT64_MAX);
        struct io_uring_cqe *cqe;
        if (io_uring_submit_and_wait(ring, 1) >= 0 && ring_wait(ring, &cqe) == 0)
                io_uring_cqe_seen(ring, cqe);
}

/* One entry of a batch on its way through the ring. */
struct put_op {
        char rel[96], tmp[64];
        struct xfer x;
        uint64_t need;     /* reserved bytes */
        int result;        /* first failure of the chain, or 0 */
        bool opened;       /* the direct descriptor slot holds the file */
        bool active;
};

static void op_fail(int *result, int r)
{
        if (*result >= 0 && r != -ECANCELED)
                *result = r;
}

/* At most CAIRN_URING_SLOTS items: one submission. */
static void put_batch_ring(struct cairn_cache *cache, struct io_uring *ring,
                           const struct cairn_cache_item *items, size_t n, int *results)
{
        struct put_op *ops = calloc(n, sizeof(*ops));
        uint8_t *tails = aligned_alloc(IO_ALIGN, n * TAIL_MAX);
        size_t i;

        if (!ops || !tails) {
                free(ops);
                free(tails);
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
                if (r < 0) {
                        results[i] = r;
                        continue;
                }
                uint64_t rnd = 0;
                if (getentropy(&rnd, sizeof(rnd)) < 0)
                        r = -errno;
                else
                        r = xfer_write_setup(&op->x, items[i].data, items[i].size,
                                             cairn_crc32c(0, items[i].data, items[i].size),
                                             cache->direct, tails + i * TAIL_MAX);
                if (r < 0) {
                        usage_sub(cache, op->need);
                        results[i] = r;
                        continue;
                }
                snprintf(op->tmp, sizeof(op->tmp), "tmp/%d-%016llx", (int)getpid(),
                         (unsigned long long)rnd);
                op->active = true;

                /* A direct descriptor takes no O_CLOEXEC: it is never in the fd table. */
                int flags = O_WRONLY | O_CREAT | O_EXCL | (cache->direct ? O_DIRECT : 0);
                struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
                io_uring_prep_openat_direct(sqe, cache->dir_fd, op->tmp, flags, 0644, (unsigned)i);
                sqe->flags |= IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 0);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_writev(sqe, (int)i, op->x.iov, (unsigned)op->x.niov, 0);
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
                        r = ring_wait(ring, &cqe);
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
                                        op_fail(&op->result, res);
                                break;
                        case 1:
                                if (res >= 0 && (size_t)res != op->x.io)
                                        res = -ENOSPC; /* short writes mean a full disk */
                                if (res < 0)
                                        op_fail(&op->result, res);
                                break;
                        case 2:
                                if (res >= 0)
                                        op->opened = false;
                                else
                                        op_fail(&op->result, res);
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
                xfer_done(&op->x);
                if (op->opened) /* a chain that broke after the open leaves the slot in use */
                        ring_close_slot(ring, (unsigned)i);
                int r = op->result;
                if (r == -ENOENT) /* first entry of its shard: the rename needs the directory */
                        r = entry_publish(cache, op->tmp, op->rel);
                bool direct = cache->direct;
                if (r == -EINVAL && direct) { /* O_DIRECT refused here: redo it buffered */
                        direct = false;
                        r = -EAGAIN;
                }
                if (r == -EAGAIN) {
                        unlinkat(cache->dir_fd, op->tmp, 0);
                        usage_sub(cache, op->need);
                        results[i] = put_one(cache, items[i].id, items[i].data, items[i].size,
                                             direct);
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
        free(tails);
        free(ops);
}

void cairn_cache_put_batch(struct cairn_cache *cache, const struct cairn_cache_item *items,
                           size_t n, int *results)
{
        struct io_uring *ring = n > 1 ? cairn_uring_thread() : NULL;
        if (!ring) {
                for (size_t i = 0; i < n; i++)
                        results[i] = cairn_cache_put(cache, items[i].id, items[i].data,
                                                     items[i].size);
                return;
        }
        for (size_t i = 0; i < n; i += CAIRN_URING_SLOTS) {
                size_t k = n - i < CAIRN_URING_SLOTS ? n - i : CAIRN_URING_SLOTS;
                put_batch_ring(cache, ring, items + i, k, results + i);
        }
}

/* One entry of a batched read on its way through the ring. */
struct get_op {
        char rel[96];
        struct statx stx;
        struct xfer x;
        ssize_t got;       /* bytes read */
        int result;        /* first failure of the chain, or 0 */
        bool stat_ok;
        bool opened;
        bool active;
};

/* At most CAIRN_URING_SLOTS items: one submission. */
static void get_batch_ring(struct cairn_cache *cache, struct io_uring *ring,
                           const struct cairn_cache_item *items, size_t n, int *results)
{
        struct get_op *ops = calloc(n, sizeof(*ops));
        uint8_t *tails = aligned_alloc(IO_ALIGN, n * TAIL_MAX);
        size_t i;

        if (!ops || !tails) {
                free(ops);
                free(tails);
                for (i = 0; i < n; i++)
                        results[i] = cairn_cache_get_into(cache, items[i].id, items[i].data,
                                                          items[i].cap, items[i].size);
                return;
        }
        unsigned queued = 0;
        for (i = 0; i < n; i++) {
                struct get_op *op = &ops[i];
                if (items[i].cap < items[i].size) {
                        results[i] = -EINVAL;
                        continue;
                }
                entry_path(items[i].id, op->rel);
                results[i] = xfer_read_setup(&op->x, items[i].data, items[i].cap, items[i].size,
                                             cache->direct, tails + i * TAIL_MAX);
                if (results[i] < 0)
                        continue;
                op->active = true;

                /* statx first: a miss costs one operation, and a hit's mtime is known. */
                struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
                io_uring_prep_statx(sqe, cache->dir_fd, op->rel, AT_SYMLINK_NOFOLLOW,
                                    STATX_SIZE | STATX_MTIME, &op->stx);
                sqe->flags |= IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 0);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_openat_direct(sqe, cache->dir_fd, op->rel,
                                            O_RDONLY | O_NOFOLLOW | (cache->direct ? O_DIRECT : 0),
                                            0, (unsigned)i);
                sqe->flags |= IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 1);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_readv(sqe, (int)i, op->x.iov, (unsigned)op->x.niov, 0);
                sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
                io_uring_sqe_set_data64(sqe, i << 2 | 2);
                sqe = io_uring_get_sqe(ring);
                io_uring_prep_close_direct(sqe, (unsigned)i);
                io_uring_sqe_set_data64(sqe, i << 2 | 3);
                queued += 4;
        }
        bool broken = false;
        if (queued) {
                int r = io_uring_submit_and_wait(ring, queued);
                unsigned seen = 0;
                while (r >= 0 && seen < queued) {
                        struct io_uring_cqe *cqe;
                        r = ring_wait(ring, &cqe);
                        if (r < 0)
                                break;
                        uint64_t ud = io_uring_cqe_get_data64(cqe);
                        struct get_op *op = &ops[ud >> 2];
                        int res = cqe->res;
                        switch (ud & 3) {
                        case 0:
                                if (res >= 0)
                                        op->stat_ok = true;
                                else
                                        op_fail(&op->result, res);
                                break;
                        case 1:
                                if (res >= 0)
                                        op->opened = true;
                                else
                                        op_fail(&op->result, res);
                                break;
                        case 2:
                                /* A short read breaks the chain; the length check below sees it. */
                                op->got = res;
                                if (res < 0)
                                        op_fail(&op->result, res);
                                break;
                        default:
                                if (res >= 0)
                                        op->opened = false;
                        }
                        io_uring_cqe_seen(ring, cqe);
                        seen++;
                }
                broken = r < 0;
        }
        for (i = 0; i < n; i++) {
                struct get_op *op = &ops[i];
                if (!op->active)
                        continue;
                if (op->opened)
                        ring_close_slot(ring, (unsigned)i);
                int r = op->result;
                bool direct = cache->direct;
                if (r == -EINVAL && direct) /* O_DIRECT refused here: read it buffered */
                        direct = false;
                else if (r == -ENOENT) /* a miss, or evicted between statx and open */
                        goto done;
                if (broken || r < 0) {
                        /* The ring broke, or an error the plain path reports best. */
                        xfer_done(&op->x);
                        results[i] = get_one(cache, op->rel, items[i].data, items[i].cap,
                                             items[i].size, direct);
                        continue;
                }
                if (op->stat_ok && op->stx.stx_size == op->x.io && op->got == (ssize_t)op->x.io &&
                    xfer_read_check(&op->x)) {
                        r = 0;
                        if (time(NULL) - op->stx.stx_mtime.tv_sec > TOUCH_INTERVAL_SECONDS)
                                utimensat(cache->dir_fd, op->rel, NULL, AT_SYMLINK_NOFOLLOW);
                } else {
                        r = drop_damaged(cache, op->rel, items[i].size,
                                         op->stat_ok ? (off_t)op->stx.stx_size : (off_t)op->x.io);
                }
        done:
                xfer_done(&op->x);
                results[i] = r;
        }
        free(tails);
        free(ops);
}

void cairn_cache_get_batch(struct cairn_cache *cache, const struct cairn_cache_item *items,
                           size_t n, int *results)
{
        struct io_uring *ring = n > 1 ? cairn_uring_thread() : NULL;
        if (!ring) {
                for (size_t i = 0; i < n; i++)
                        results[i] = cairn_cache_get_into(cache, items[i].id, items[i].data,
                                                          items[i].cap, items[i].size);
                return;
        }
        for (size_t i = 0; i < n; i += CAIRN_URING_SLOTS) {
                size_t k = n - i < CAIRN_URING_SLOTS ? n - i : CAIRN_URING_SLOTS;
                get_batch_ring(cache, ring, items + i, k, results + i);
        }
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
        struct cairn_digest want, got;
        bool good = false;

        v->s->checked++;
        /* Entries are whole blocks; any other length is damaged without reading it. */
        size_t len = st->st_size > 0 ? (size_t)st->st_size : 0;
        if (len >= IO_ALIGN && len % IO_ALIGN == 0 && len <= v->cap) {
                bool direct = c->direct;
                int fd = open_entry(c, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, &direct);
                if (fd >= 0) {
                        struct xfer x = {.io = len, .user = v->buf, .end = v->buf, .niov = 1,
                                         .iov = {{v->buf, len}}};
                        ssize_t n = xfer_rw(fd, &x, false);
                        if (n == -EINVAL && direct && clear_direct(fd) == 0)
                                n = xfer_rw(fd, &x, false);
                        close(fd);
                        struct entry_trailer t;
                        memcpy(&t, v->buf + len - sizeof(t), sizeof(t));
                        uint32_t size = le32toh(t.size);
                        if (n == (ssize_t)len && memcmp(t.magic, CAIRN_CACHE_ENTRY_MAGIC, 8) == 0 &&
                            cairn_cache_io_size(size) == len) {
                                /* The same checks as a read, with the size the trailer names. */
                                x.size = size;
                                good = xfer_read_check(&x) &&
                                       cairn_digest_from_hex(strrchr(rel, '/') + 1,
                                                             CAIRN_DIGEST_HEX_LEN, &want) == 0;
                                if (good) {
                                        cairn_sha256(v->buf, size, &got);
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
        /* Larger than any chunk the manifest format allows. */
        v.cap = cairn_cache_io_size(64u << 20);
        v.buf = aligned_alloc(IO_ALIGN, v.cap);
        if (!v.buf)
                return -ENOMEM;
        int r = for_each_entry(cache, verify_entry, &v);
        free(v.buf);
        if (r < 0)
                return r;
        *ret_stats = s;
        return 0;
}

void cairn_cache_count_manifest(struct cairn_cache *cache, uint64_t size)
{
        if (cache->max_bytes)
                limit_take(cache, manifests_footprint(size, 1));
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
