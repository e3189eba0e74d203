/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path of a volume.
 *
 * Opening: resolve the ref, map the manifest (in place from a local store,
 * else from a verified copy in the cache directory), check its SHA-256
 * against the digest the ref named, validate it, then drop the mapped pages
 * from our resident set: the kernel page cache keeps them, and lookups
 * fault in only what they touch.
 *
 * Reading: a bounded in-memory table of decoded chunks sits in front of
 * the on-disk chunk cache and the store.  An entry being loaded is marked
 * so that concurrent readers of the same chunk wait for one fetch
 * (single-flight) instead of fetching it again.  Nothing is inserted,
 * cached or returned before its SHA-256 matched the id in the manifest.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "cairn/cache.h"
#include "cairn/log.h"
#include "cairn/profile.h"
#include "cairn/store.h"
#include "cairn/volume.h"

enum chunk_state { CHUNK_LOADING, CHUNK_READY, CHUNK_FAILED };

/* A decoded chunk in memory. */
struct mem_chunk {
        struct cairn_digest id;
        uint8_t *data;
        size_t cap;               /* bytes allocated for data */
        uint32_t size;
        enum chunk_state state;
        int error;                /* when CHUNK_FAILED */
        unsigned pins;            /* readers copying out of data */
        uint32_t served;          /* bytes of it handed to readers so far (saturating) */
        bool ahead;               /* fetched by read-ahead, not read yet */
        struct mem_chunk *hnext;  /* hash chain */
        struct mem_chunk *prev, *next; /* LRU list, most recent first */
};

/*
 * Read-ahead state of one sequential reader (a file being streamed).  A
 * few are tracked, least recently used replaced, like the kernel's
 * per-file readahead but across the whole volume.
 */
#define STREAMS 32
#define QUEUE_LEN 512
#define PREFETCH_WORKERS 12
/* Read-ahead requests are not cut smaller than this (per-request costs). */
#define AHEAD_REQUEST_MIN (4u << 20)
#define WINDOW_MIN (4u << 20)
/* How far from where a stream got to a read may land and still continue it. */
#define SEQ_SLACK (8u << 20)
/* Threads that complete asynchronous reads (each may wait on one fetch). */
#define READERS 16

struct read_req;

struct stream {
        uint32_t ino;
        bool used;
        uint64_t next_off;   /* where a sequential reader reads next */
        uint64_t window;     /* bytes to keep fetched ahead; 0: not sequential */
        uint64_t queued_to;  /* chunks below this index are queued or loaded */
        uint64_t last_use;
};

/*
 * Chunk and fetch buffers are recycled instead of going back to the kernel:
 * at MiB sizes every fresh buffer is a new mapping whose pages fault in
 * (and are zeroed) one by one, which cost more CPU than hashing them.
 * Buffers are their own anonymous mappings: page-aligned, so that the
 * chunk cache can read and write them with O_DIRECT, asked to be backed by
 * huge pages (512 times fewer faults when one is fresh), and given back to
 * the kernel at once when freed, so that resident memory follows the
 * budget.  Capacities are rounded to 1 MiB so that a buffer fits many chunk
 * sizes, and leave room for the cache entry trailer (cairn_cache_io_size).
 * The pool holds at most a quarter of the memory budget and counts against
 * it, so resident memory stays within memory_limit.
 */
#define POOL_SLOTS 32
#define BUF_ROUND (1u << 20)

struct cairn_volume {
        struct cairn_store *store; /* borrowed */
        struct cairn_cache *cache; /* NULL without a cache dir */
        struct cairn_digest digest;
        void *map;
        size_t map_size;
        struct cairn_manifest manifest;

        pthread_mutex_t lock;
        pthread_cond_t loaded;      /* broadcast when an entry leaves CHUNK_LOADING */
        struct mem_chunk **buckets; /* protected by lock */
        size_t nbuckets;
        struct mem_chunk *lru_head, *lru_tail; /* protected by lock */
        size_t mem_used;            /* bytes of buffers in use (table, fetches), protected by lock */
        /* Recycled buffers (see buf_get_locked), protected by lock. */
        void *pool[POOL_SLOTS];
        size_t pool_cap[POOL_SLOTS];
        unsigned pool_n;
        size_t pool_bytes;
        size_t mem_limit;
        uint64_t deadline_ns;       /* per read */
        uint32_t coalesce_max;      /* stored bytes per range request (remote stores) */

        /* Sequential read-ahead, all protected by lock. */
        struct stream streams[STREAMS];
        uint64_t stream_clock;
        uint64_t queue[QUEUE_LEN];  /* chunk indexes to prefetch */
        size_t queue_head, queue_len;
        pthread_cond_t queue_cond;  /* work queued, or stopping */
        pthread_t workers[PREFETCH_WORKERS];
        unsigned nworkers;
        bool workers_started, stopping;
        size_t window_max;
        uint32_t ahead_request_max; /* stored bytes per read-ahead request (remote stores) */

        /* Profile recording (profile.h), protected by record_lock. */
        pthread_mutex_t record_lock;
        char *record_path;          /* NULL: not recording */
        uint8_t *record_seen;       /* one byte per chunk index */
        struct cairn_digest *record_ids;
        size_t record_n, record_cap;
        uint64_t record_flushed_ns;

        int cache_error;            /* why the cache directory is not used, or 0 */

        bool down;                  /* the store stopped answering; atomic, see fetch_deadline() */
        uint64_t last_probe_ns;     /* atomic */

        /* Asynchronous reads: a pool that waits on fetches instead of FUSE workers. */
        struct read_req *rq_head, *rq_tail; /* protected by lock */
        pthread_cond_t rq_cond;
        pthread_t readers[READERS];
        unsigned nreaders;
        bool readers_started;

        /* Background prefetch (warm in the background); see cairn_volume_prefetch_background. */
        struct warm *bg;
        pthread_t bg_thread;
};

struct warm;
static int cairn_volume_warm_run(struct warm *w,
                                 void (*progress)(const struct cairn_warm_progress *p, void *ctx),
                                 void *ctx, struct cairn_warm_progress *ret_progress);

/* Chunks fetched by one range request at most. */
#define BATCH_MAX 64

/* One decompression context per thread, freed at thread exit. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void dctx_destroy(void *p)
{
        ZSTD_freeDCtx(p);
}

static void dctx_key_init(void)
{
        if (pthread_key_create(&dctx_key, dctx_destroy) != 0)
                abort();
}

static ZSTD_DCtx *thread_dctx(void)
{
        pthread_once(&dctx_once, dctx_key_init);
        ZSTD_DCtx *d = pthread_getspecific(dctx_key);
        if (!d) {
                d = ZSTD_createDCtx();
                if (d && pthread_setspecific(dctx_key, d) != 0) {
                        ZSTD_freeDCtx(d);
                        d = NULL;
                }
        }
        return d;
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
        if (!errbuf || !errlen)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
}

/* Copies the manifest blob into the cache (temp + rename) and returns an fd to it. */
static int manifest_fetch_to_cache(struct cairn_volume *vol, int *ret_fd)
{
        char path[4096], tmp[4200];
        uint64_t size;
        int r, fd;

        r = cairn_cache_manifest_path(vol->cache, &vol->digest, path, sizeof(path));
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                *ret_fd = fd; /* verified again after mapping, like any other copy */
                return 0;
        }
        uint64_t rnd;
        if (getentropy(&rnd, sizeof(rnd)) < 0)
                return -errno;
        snprintf(tmp, sizeof(tmp), "%s/tmp/manifest-%016llx", cairn_cache_dir(vol->cache),
                 (unsigned long long)rnd);
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        r = cairn_store_copy_blob_to_fd(vol->store, &vol->digest, fd, CAIRN_MANIFEST_MAX_SIZE,
                                        &size);
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                close(fd);
                unlink(tmp);
                return r;
        }
        cairn_cache_count_manifest(vol->cache, size);
        *ret_fd = fd;
        return 0;
}

/* Without a cache dir the manifest goes to an anonymous memory file. */
static int manifest_fetch_to_memfd(struct cairn_volume *vol, int *ret_fd)
{
        uint64_t size;
        int fd = memfd_create("cairn-manifest", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = cairn_store_copy_blob_to_fd(vol->store, &vol->digest, fd, CAIRN_MANIFEST_MAX_SIZE,
                                            &size);
        if (r < 0) {
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

static int manifest_map(struct cairn_volume *vol, bool refetch, char *errbuf, size_t errlen)
{
        int fd = -1, r;
        struct stat st;
        char dstr[CAIRN_DIGEST_STR_SIZE];
        bool from_cache = false;

        cairn_digest_to_string(&vol->digest, dstr);
        r = cairn_store_open_blob_fd(vol->store, &vol->digest, &fd);
        if (r == -EOPNOTSUPP && vol->cache) {
                char path[4096];
                /* A cached copy that failed its digest check last time is fetched anew. */
                if (refetch && cairn_cache_manifest_path(vol->cache, &vol->digest, path,
                                                         sizeof(path)) >= 0)
                        unlink(path);
                from_cache = true;
                r = manifest_fetch_to_cache(vol, &fd);
        } else if (r == -EOPNOTSUPP) {
                r = manifest_fetch_to_memfd(vol, &fd);
        }
        if (r < 0) {
                set_err(errbuf, errlen, "cannot read manifest '%s': %s", dstr,
                        cairn_error_string(r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto out;
        }
        if (st.st_size <= 0 || (uint64_t)st.st_size > CAIRN_MANIFEST_MAX_SIZE) {
                r = -EINVAL;
                set_err(errbuf, errlen, "manifest '%s' has an invalid size (%lld bytes)", dstr,
                        (long long)st.st_size);
                goto out;
        }
        vol->map_size = (size_t)st.st_size;
        vol->map = mmap(NULL, vol->map_size, PROT_READ, MAP_SHARED, fd, 0);
        if (vol->map == MAP_FAILED) {
                vol->map = NULL;
                r = -errno;
                set_err(errbuf, errlen, "cannot map manifest '%s': %s", dstr, strerror(-r));
                goto out;
        }
        madvise(vol->map, vol->map_size, MADV_SEQUENTIAL);

        struct cairn_digest actual;
        cairn_sha256(vol->map, vol->map_size, &actual);
        if (!cairn_digest_equal(&actual, &vol->digest)) {
                r = from_cache && !refetch ? -EAGAIN : -EINVAL;
                set_err(errbuf, errlen, "manifest '%s' does not match its digest", dstr);
                munmap(vol->map, vol->map_size);
                vol->map = NULL;
                goto out;
        }
        char why[256];
        r = cairn_manifest_validate(vol->map, vol->map_size, &vol->manifest, why, sizeof(why));
        if (r < 0) {
                set_err(errbuf, errlen, "invalid manifest '%s': %s", dstr, why);
                goto out;
        }
        /* Give back the pages validation touched; lookups fault in what they need. */
        madvise(vol->map, vol->map_size, MADV_DONTNEED);
        madvise(vol->map, vol->map_size, MADV_RANDOM);
        r = 0;
out:
        close(fd);
        return r;
}

int cairn_volume_open(struct cairn_store *store, const struct cairn_ref *ref,
                      const struct cairn_volume_options *opts, struct cairn_volume **ret_volume,
                      char *errbuf, size_t errlen)
{
        struct cairn_volume *vol;
        char refstr[512];
        int r;

        cairn_ref_format(ref, refstr, sizeof(refstr));
        vol = calloc(1, sizeof(*vol));
        if (!vol)
                return -ENOMEM;
        vol->store = store;
        pthread_mutex_init(&vol->lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&vol->loaded, &attr);
        pthread_condattr_destroy(&attr);
        vol->mem_limit = opts && opts->memory_limit ? opts->memory_limit
                                                    : CAIRN_VOLUME_MEMORY_DEFAULT;
        vol->deadline_ns = (uint64_t)(opts && opts->deadline_ms ? opts->deadline_ms
                                                                : CAIRN_VOLUME_DEADLINE_DEFAULT_MS) *
                           1000000ull;
        vol->coalesce_max = opts && opts->coalesce_max ? opts->coalesce_max
                                                       : CAIRN_VOLUME_COALESCE_DEFAULT;
        pthread_cond_init(&vol->queue_cond, NULL);
        pthread_cond_init(&vol->rq_cond, NULL);
        pthread_mutex_init(&vol->record_lock, NULL);
        /* Read-ahead may use half the memory budget; readers need the rest. */
        vol->window_max = vol->mem_limit / 2;
        /*
         * A window cut into one request per worker keeps every worker's
         * connection busy: over a link where each connection has its own
         * bandwidth (object stores), read-ahead throughput is the number of
         * requests in flight, and 16 MiB requests would leave most workers
         * idle in a 48 MiB window.
         */
        vol->ahead_request_max = (uint32_t)(vol->window_max / PREFETCH_WORKERS);
        if (vol->ahead_request_max < AHEAD_REQUEST_MIN)
                vol->ahead_request_max = AHEAD_REQUEST_MIN;
        if (vol->ahead_request_max > vol->coalesce_max)
                vol->ahead_request_max = vol->coalesce_max;
        vol->nbuckets = 1024;
        vol->buckets = calloc(vol->nbuckets, sizeof(*vol->buckets));
        if (!vol->buckets) {
                r = -ENOMEM;
                goto fail;
        }

        if (ref->by_digest) {
                vol->digest = ref->digest;
        } else {
                r = cairn_store_read_ref(store, ref->name, ref->tag, &vol->digest);
                if (r == -ENOENT) {
                        set_err(errbuf, errlen, "unknown tag '%s'", refstr);
                        goto fail;
                }
                if (r < 0) {
                        set_err(errbuf, errlen, "cannot read ref '%s': %s", refstr,
                                r == -EINVAL ? "malformed ref object" : cairn_error_string(r));
                        goto fail;
                }
        }
        if (opts && opts->cache_dir) {
                struct cairn_cache_options copts = {
                        .max_bytes = opts->cache_max_bytes,
                        .min_free_percent = opts->cache_min_free_percent,
                };
                r = cairn_cache_open_with(opts->cache_dir, &copts, &vol->cache);
                if (r == -EINVAL) {
                        set_err(errbuf, errlen, "invalid cache options for '%s'", opts->cache_dir);
                        goto fail;
                }
                if (r < 0) {
                        /*
                         * A cache that cannot be used (read-only, full, failing disk)
                         * costs speed, not availability: read from the store.
                         */
                        vol->cache = NULL;
                        vol->cache_error = r;
                }
        }
        r = manifest_map(vol, false, errbuf, errlen);
        if (r == -EAGAIN)
                r = manifest_map(vol, true, errbuf, errlen);
        if (r < 0)
                goto fail;
        if (opts && opts->record_profile) {
                vol->record_path = strdup(opts->record_profile);
                vol->record_seen = calloc(vol->manifest.hdr->chunk_count + 1, 1);
                if (!vol->record_path || !vol->record_seen) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        *ret_volume = vol;
        return 0;
fail:
        cairn_volume_free(vol);
        return r;
}

void cairn_volume_free(struct cairn_volume *vol)
{
        if (!vol)
                return;
        pthread_mutex_lock(&vol->lock);
        vol->stopping = true;
        pthread_cond_broadcast(&vol->queue_cond);
        pthread_cond_broadcast(&vol->rq_cond);
        pthread_mutex_unlock(&vol->lock);
        /* Queued asynchronous reads complete with -ECANCELED before this returns. */
        for (unsigned i = 0; i < vol->nreaders; i++)
                pthread_join(vol->readers[i], NULL);
        pthread_cond_destroy(&vol->rq_cond);
        for (unsigned i = 0; i < vol->nworkers; i++)
                pthread_join(vol->workers[i], NULL);
        if (vol->bg)
                pthread_join(vol->bg_thread, NULL);
        pthread_cond_destroy(&vol->queue_cond);
        if (vol->record_path) {
                cairn_volume_profile_flush(vol);
                free(vol->record_path);
                free(vol->record_seen);
                free(vol->record_ids);
        }
        pthread_mutex_destroy(&vol->record_lock);
        for (struct mem_chunk *c = vol->lru_head, *next; c; c = next) {
                next = c->next;
                munmap(c->data, c->cap);
                free(c);
        }
        for (unsigned i = 0; i < vol->pool_n; i++)
                munmap(vol->pool[i], vol->pool_cap[i]);
        free(vol->buckets);
        if (vol->map)
                munmap(vol->map, vol->map_size);
        cairn_cache_free(vol->cache);
        pthread_cond_destroy(&vol->loaded);
        pthread_mutex_destroy(&vol->lock);
        free(vol);
}

const struct cairn_manifest *cairn_volume_manifest(const struct cairn_volume *vol)
{
        return &vol->manifest;
}

const struct cairn_digest *cairn_volume_digest(const struct cairn_volume *vol)
{
        return &vol->digest;
}

int cairn_volume_cache_error(const struct cairn_volume *vol)
{
        return vol->cache_error;
}

struct cairn_store *cairn_volume_store(const struct cairn_volume *vol)
{
        return vol->store;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Decodes the stored bytes of chunk into out and checks them against its id. */
static int chunk_decode_verify(struct cairn_volume *vol, uint64_t chunk, const uint8_t *stored,
                               uint8_t *out)
{
        const struct cairn_manifest_chunk *c = &vol->manifest.chunks[chunk];
        struct cairn_digest actual;

        if (c->flags & CAIRN_CHUNK_ZSTD) {
                ZSTD_DCtx *d = thread_dctx();
                if (!d)
                        return -ENOMEM;
                size_t n = ZSTD_decompressDCtx(d, out, c->size, stored, c->stored_size);
                if (ZSTD_isError(n) || n != c->size) {
                        cairn_debug("chunk %llu: cannot decompress: %s", (unsigned long long)chunk,
                                    ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size");
                        return -EIO;
                }
        } else if (stored != out) {
                memcpy(out, stored, c->size);
        }
        cairn_sha256(out, c->size, &actual);
        if (!cairn_digest_equal(&actual, &c->id)) {
                cairn_debug("chunk %llu: digest mismatch", (unsigned long long)chunk);
                return -EIO;
        }
        return 0;
}

int cairn_volume_fetch_chunk(struct cairn_volume *vol, uint64_t chunk, void *buf)
{
        if (chunk >= vol->manifest.hdr->chunk_count)
                return -EINVAL;
        const struct cairn_manifest_chunk *c = &vol->manifest.chunks[chunk];
        const struct cairn_manifest_blob *b = &vol->manifest.blobs[c->blob];
        uint8_t *stored = buf;
        int r;

        if (c->flags & CAIRN_CHUNK_ZSTD) {
                stored = malloc(c->stored_size);
                if (!stored)
                        return -ENOMEM;
        }
        r = cairn_store_read_blob(vol->store, &b->digest, c->blob_offset, c->stored_size, stored);
        if (r < 0) {
                cairn_debug("chunk %llu: read from blob failed: %s", (unsigned long long)chunk,
                            strerror(-r));
                r = -EIO;
        } else {
                r = chunk_decode_verify(vol, chunk, stored, buf);
        }
        if (stored != buf)
                free(stored);
        return r;
}

static size_t bucket_of(const struct cairn_volume *vol, const struct cairn_digest *id)
{
        uint64_t h;
        memcpy(&h, id->bytes, sizeof(h));
        return (size_t)(h % vol->nbuckets);
}

/* Called with vol->lock held. */
static struct mem_chunk *table_find(struct cairn_volume *vol, const struct cairn_digest *id)
{
        for (struct mem_chunk *c = vol->buckets[bucket_of(vol, id)]; c; c = c->hnext)
                if (cairn_digest_equal(&c->id, id))
                        return c;
        return NULL;
}

static void lru_unlink(struct cairn_volume *vol, struct mem_chunk *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                vol->lru_head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                vol->lru_tail = c->prev;
        c->prev = c->next = NULL;
}

static void lru_push_front(struct cairn_volume *vol, struct mem_chunk *c)
{
        c->prev = NULL;
        c->next = vol->lru_head;
        if (vol->lru_head)
                vol->lru_head->prev = c;
        vol->lru_head = c;
        if (!vol->lru_tail)
                vol->lru_tail = c;
}

static void lru_push_back(struct cairn_volume *vol, struct mem_chunk *c)
{
        c->next = NULL;
        c->prev = vol->lru_tail;
        if (vol->lru_tail)
                vol->lru_tail->next = c;
        vol->lru_tail = c;
        if (!vol->lru_head)
                vol->lru_head = c;
}

/*
 * Takes c out of the hash table and the LRU and stops counting its memory.
 * Its hnext then points to itself: "unlinked, still owned by a reader".
 */
static void table_unlink(struct cairn_volume *vol, struct mem_chunk *c)
{
        struct mem_chunk **pp = &vol->buckets[bucket_of(vol, &c->id)];
        while (*pp != c)
                pp = &(*pp)->hnext;
        *pp = c->hnext;
        c->hnext = c;
        lru_unlink(vol, c);
}

/* A fresh buffer of cap bytes (a multiple of BUF_ROUND), or NULL. */
static void *buf_map(size_t cap)
{
        void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        madvise(p, cap, MADV_HUGEPAGE); /* a hint: fine where huge pages are off */
        return p;
}

/*
 * The buffer capacity for n bytes, rounded to BUF_ROUND.  The cache reads
 * into it in place (O_DIRECT) except for a last partial 4 KiB block.
 */
static size_t buf_cap_for(size_t n)
{
        return (n + BUF_ROUND - 1) & ~(size_t)(BUF_ROUND - 1);
}

/* A recycled buffer of cap may serve a request for want when it wastes at most half. */
static bool buf_fits(size_t cap, size_t want)
{
        return cap >= want && cap <= 2 * want;
}

/*
 * The least recently used entry that may go (loaded, unpinned), or NULL.
 * With spare_ahead, read-ahead that no reader has reached yet is kept:
 * more read-ahead must not push out the read-ahead a reader needs next.
 * Lock held.
 */
static bool evictable(const struct mem_chunk *c, bool spare_ahead)
{
        return c->pins == 0 && c->state != CHUNK_LOADING && !(spare_ahead && c->ahead);
}

static struct mem_chunk *evict_candidate_locked(struct cairn_volume *vol, bool spare_ahead)
{
        for (struct mem_chunk *c = vol->lru_tail; c; c = c->prev)
                if (evictable(c, spare_ahead))
                        return c;
        return NULL;
}

/* How many evictable entries from the LRU's cold end are searched for a buffer that fits. */
#define EVICT_FIT_SCAN 8

/*
 * Among the EVICT_FIT_SCAN least recently used entries that may go, the
 * coldest whose buffer fits want as it is, or NULL.  Chunk sizes vary, so
 * the very coldest often has a buffer of the wrong size; unmapping it and
 * mapping another costs a fresh zeroed page for every page.  Lock held.
 */
static struct mem_chunk *evict_fitting_candidate_locked(struct cairn_volume *vol,
                                                        bool spare_ahead, size_t want)
{
        unsigned seen = 0;
        for (struct mem_chunk *c = vol->lru_tail; c && seen < EVICT_FIT_SCAN; c = c->prev) {
                if (!evictable(c, spare_ahead))
                        continue;
                if (buf_fits(c->cap, want))
                        return c;
                seen++;
        }
        return NULL;
}

/*
 * One step toward the budget, lock held: a pooled buffer goes back to the
 * kernel (*ret_p NULL), else the least recently used entry that may go is
 * evicted and its buffer handed to the caller (*ret_p, *ret_cap; still
 * counted in mem_used) to reuse or unmap.  false when nothing can go.
 */
static bool reclaim_one_locked(struct cairn_volume *vol, bool spare_ahead, void **ret_p,
                               size_t *ret_cap)
{
        *ret_p = NULL;
        *ret_cap = 0;
        if (vol->pool_n) {
                vol->pool_n--;
                vol->pool_bytes -= vol->pool_cap[vol->pool_n];
                munmap(vol->pool[vol->pool_n], vol->pool_cap[vol->pool_n]);
                return true;
        }
        struct mem_chunk *c = evict_candidate_locked(vol, spare_ahead);
        if (!c)
                return false;
        table_unlink(vol, c);
        *ret_p = c->data;
        *ret_cap = c->cap;
        free(c);
        return true;
}

/*
 * Called with lock held.  A buffer of at least n bytes, counted as in use,
 * or NULL.  Memory is recycled wherever it can be: a pooled buffer of a
 * fitting size first; else, while a fresh buffer would not fit the budget,
 * pooled buffers go back to the kernel and the least recently used entries
 * are evicted, the first whose buffer fits being reused as it is.  Only
 * then is a buffer mapped.  With within_budget (read-ahead) that happens
 * only inside the budget; readers get their buffer regardless, so that a
 * budget full of pinned chunks slows reads down but never fails them.
 */
static void *buf_get_locked(struct cairn_volume *vol, size_t n, bool within_budget,
                            size_t *ret_cap)
{
        size_t want = buf_cap_for(n);
        int best = -1;
        for (unsigned i = 0; i < vol->pool_n; i++)
                if (buf_fits(vol->pool_cap[i], want) &&
                    (best < 0 || vol->pool_cap[i] < vol->pool_cap[best]))
                        best = (int)i;
        if (best >= 0) {
                void *p = vol->pool[best];
                size_t cap = vol->pool_cap[best];
                vol->pool_bytes -= cap;
                vol->pool_n--;
                vol->pool[best] = vol->pool[vol->pool_n];
                vol->pool_cap[best] = vol->pool_cap[vol->pool_n];
                vol->mem_used += cap;
                *ret_cap = cap;
                return p;
        }
        while (vol->mem_used + vol->pool_bytes + want > vol->mem_limit) {
                void *p;
                size_t cap;
                struct mem_chunk *fit = evict_fitting_candidate_locked(vol, within_budget, want);
                if (fit) {
                        table_unlink(vol, fit);
                        p = fit->data;
                        *ret_cap = fit->cap; /* stays counted in mem_used */
                        free(fit);
                        return p;
                }
                if (!reclaim_one_locked(vol, within_budget, &p, &cap))
                        break;
                if (p) {
                        vol->mem_used -= cap;
                        munmap(p, cap);
                }
        }
        if (within_budget && vol->mem_used + vol->pool_bytes + want > vol->mem_limit)
                return NULL;
        void *p = buf_map(want);
        if (!p)
                return NULL;
        vol->mem_used += want;
        *ret_cap = want;
        return p;
}

/* Called with lock held.  Returns a buffer to the pool, or to the kernel when the pool is full. */
static void buf_put_locked(struct cairn_volume *vol, void *p, size_t cap)
{
        vol->mem_used -= cap;
        if (vol->pool_n < POOL_SLOTS && vol->pool_bytes + cap <= vol->mem_limit / 4 &&
            !vol->stopping) {
                vol->pool[vol->pool_n] = p;
                vol->pool_cap[vol->pool_n++] = cap;
                vol->pool_bytes += cap;
        } else {
                munmap(p, cap);
        }
}

static void *buf_get(struct cairn_volume *vol, size_t n, size_t *ret_cap)
{
        pthread_mutex_lock(&vol->lock);
        void *p = buf_get_locked(vol, n, false, ret_cap);
        pthread_mutex_unlock(&vol->lock);
        return p;
}

static void buf_put(struct cairn_volume *vol, void *p, size_t cap)
{
        pthread_mutex_lock(&vol->lock);
        buf_put_locked(vol, p, cap);
        pthread_mutex_unlock(&vol->lock);
}

/* Called with lock held (or when no other thread is left). */
static void free_entry(struct cairn_volume *vol, struct mem_chunk *c)
{
        buf_put_locked(vol, c->data, c->cap);
        free(c);
}

static void table_remove(struct cairn_volume *vol, struct mem_chunk *c)
{
        table_unlink(vol, c);
        free_entry(vol, c);
}

/* Gives memory back until the budget holds again (pooled buffers first, then LRU entries). */
static void table_trim_locked(struct cairn_volume *vol)
{
        while (vol->mem_used + vol->pool_bytes > vol->mem_limit) {
                void *p;
                size_t cap;
                if (!reclaim_one_locked(vol, false, &p, &cap))
                        break;
                if (p) {
                        vol->mem_used -= cap;
                        munmap(p, cap);
                }
        }
}

/*
 * A store that let a request run into its deadline is taken as down: one
 * user read() becomes several FUSE requests (readahead, then the page
 * itself), and each would otherwise wait out a full deadline of its own.
 * While down, a fetch gets only a short probe budget instead of the full
 * deadline, so an outage costs each request about a second, not thirty;
 * the first fetch that succeeds clears the state, so reads recover as soon
 * as the store answers again.  Metadata never waits on the store at all.
 */
#define DOWN_PROBE_NS 1000000000ull

/*
 * The deadline for a fetch, or 0 when it must not be tried: while the store
 * is down, one fetch a second may probe it (with a short budget), the
 * others fail at once.
 */
static uint64_t fetch_deadline(struct cairn_volume *vol, uint64_t deadline)
{
        if (!__atomic_load_n(&vol->down, __ATOMIC_ACQUIRE))
                return deadline;
        uint64_t now = now_ns();
        uint64_t last = __atomic_load_n(&vol->last_probe_ns, __ATOMIC_RELAXED);
        if (now - last < DOWN_PROBE_NS ||
            !__atomic_compare_exchange_n(&vol->last_probe_ns, &last, now, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
                return 0;
        return now + DOWN_PROBE_NS < deadline ? now + DOWN_PROBE_NS : deadline;
}

static void backend_note(struct cairn_volume *vol, int r)
{
        if (r == -ETIMEDOUT) {
                __atomic_store_n(&vol->last_probe_ns, now_ns(), __ATOMIC_RELAXED);
                __atomic_store_n(&vol->down, true, __ATOMIC_RELEASE);
        } else if (r >= 0) {
                __atomic_store_n(&vol->down, false, __ATOMIC_RELEASE);
        }
}

/*
 * A run of chunks fetched with one range request: contiguous in one blob.
 * entries[i] is the table entry of chunk first + i, all CHUNK_LOADING.
 */
static void chunk_release(struct cairn_volume *vol, struct mem_chunk *c);

struct batch {
        uint64_t first;
        unsigned n;
        bool ahead;       /* read-ahead for a reader: entries start as not read yet */
        int cached[BATCH_MAX]; /* set by batch_fetch: 0 stored in the on-disk cache, or -errno */
        struct mem_chunk *entries[BATCH_MAX];
};

static bool can_join(const struct cairn_manifest_chunk *prev, const struct cairn_manifest_chunk *c)
{
        return c->blob == prev->blob && c->blob_offset == prev->blob_offset + prev->stored_size;
}

/*
 * A new LOADING entry for mc with pins pins, or NULL (no memory; with
 * within_budget, also when the budget is full of entries in use).
 */
static struct mem_chunk *entry_new_locked(struct cairn_volume *vol,
                                          const struct cairn_manifest_chunk *mc, unsigned pins,
                                          bool within_budget)
{
        struct mem_chunk *c = calloc(1, sizeof(*c));
        size_t cap = 0;
        uint8_t *data = c ? buf_get_locked(vol, mc->size, within_budget, &cap) : NULL;
        if (!data) {
                free(c);
                return NULL;
        }
        c->id = mc->id;
        c->data = data;
        c->cap = cap;
        c->size = mc->size;
        c->state = CHUNK_LOADING;
        c->pins = pins;
        size_t b = bucket_of(vol, &c->id);
        c->hnext = vol->buckets[b];
        vol->buckets[b] = c;
        lru_push_front(vol, c);
        return c;
}

/*
 * Extends a batch with the chunks that follow it in the same blob, while
 * they are not loaded or cached already and fit the request and memory
 * caps: a sequential reader then costs one large request per window
 * instead of one per chunk.  Called with vol->lock held.
 */
static void batch_extend_locked(struct cairn_volume *vol, struct batch *b)
{
        const struct cairn_manifest *m = &vol->manifest;
        uint64_t bytes = m->chunks[b->first].stored_size;
        uint64_t cap = b->ahead ? vol->ahead_request_max : vol->coalesce_max;
        while (b->n < BATCH_MAX && b->first + b->n < m->hdr->chunk_count) {
                const struct cairn_manifest_chunk *prev = &m->chunks[b->first + b->n - 1];
                const struct cairn_manifest_chunk *c = prev + 1;
                if (!can_join(prev, c) || bytes + c->stored_size > cap)
                        break;
                if (table_find(vol, &c->id))
                        break;
                if (vol->cache && cairn_cache_contains(vol->cache, &c->id))
                        break;
                struct mem_chunk *e = entry_new_locked(vol, c, 0, true);
                if (!e)
                        break;
                e->ahead = b->ahead;
                b->entries[b->n++] = e;
                bytes += c->stored_size;
        }
}

/*
 * Fetches a batch with range requests, verifies every chunk, and refetches
 * the ones that failed verification (a flipped byte on the wire) until they
 * pass, the attempts run out or the deadline passes.  Verified chunks are
 * written to the on-disk cache before they are published.  Returns the
 * result for entries[0]; every entry leaves CHUNK_LOADING.
 */
/*
 * Fetches chunks lo..hi of a batch (adjacent in their blob) with one range
 * request and verifies each, setting result[].  The range is scattered
 * straight into the chunk buffers: an uncompressed chunk's stored bytes
 * are its bytes, so they land where readers will read them and are only
 * hashed; compressed ones land in one staging buffer and are decoded from
 * there.  Returns the fetch's result (the store already retried transport
 * faults).
 */
static int fetch_run(struct cairn_volume *vol, struct batch *b, unsigned lo, unsigned hi,
                     uint64_t deadline, int *result)
{
        const struct cairn_manifest *m = &vol->manifest;
        const struct cairn_manifest_chunk *first = &m->chunks[b->first + lo];
        struct iovec iov[BATCH_MAX];
        size_t staged = 0, stage_cap = 0;
        uint8_t *stage = NULL;

        for (unsigned i = lo; i <= hi; i++)
                if (m->chunks[b->first + i].flags & CAIRN_CHUNK_ZSTD)
                        staged += m->chunks[b->first + i].stored_size;
        if (staged && !(stage = buf_get(vol, staged, &stage_cap)))
                return -ENOMEM;
        size_t at = 0;
        for (unsigned i = lo; i <= hi; i++) {
                const struct cairn_manifest_chunk *c = &m->chunks[b->first + i];
                if (c->flags & CAIRN_CHUNK_ZSTD) {
                        iov[i - lo] = (struct iovec){stage + at, c->stored_size};
                        at += c->stored_size;
                } else {
                        iov[i - lo] = (struct iovec){b->entries[i]->data, c->stored_size};
                }
        }
        uint64_t fd = fetch_deadline(vol, deadline);
        int r = -EIO; /* when fd is 0: the store is down and was probed within the second */
        if (fd) {
                r = cairn_store_read_blob_iov_until(vol->store, &m->blobs[first->blob].digest,
                                                    first->blob_offset, iov, hi - lo + 1, fd);
                backend_note(vol, r);
        }
        if (r < 0) {
                cairn_debug("chunks %llu..%llu: fetch failed: %s",
                            (unsigned long long)(b->first + lo),
                            (unsigned long long)(b->first + hi), strerror(-r));
        } else {
                for (unsigned i = lo; i <= hi; i++)
                        result[i] = chunk_decode_verify(vol, b->first + i, iov[i - lo].iov_base,
                                                        b->entries[i]->data);
        }
        if (stage)
                buf_put(vol, stage, stage_cap);
        return r;
}

/*
 * Fetches a batch with range requests, verifies every chunk, and refetches
 * the runs of chunks that failed verification (a flipped byte on the wire)
 * until they pass, the attempts run out or the deadline passes.  Verified
 * chunks are published, then written to the on-disk cache.  Returns the
 * result for entries[0]; every entry leaves CHUNK_LOADING.
 */
static int batch_fetch(struct cairn_volume *vol, struct batch *b, uint64_t deadline)
{
        int result[BATCH_MAX];
        int r = -EIO;

        for (unsigned i = 0; i < b->n; i++)
                result[i] = -EIO;
        for (unsigned attempt = 0; attempt < CAIRN_VOLUME_VERIFY_ATTEMPTS; attempt++) {
                if (attempt > 0 && now_ns() >= deadline)
                        break;
                bool any = false;
                r = 0;
                for (unsigned lo = 0; lo < b->n && r >= 0; lo++) {
                        if (result[lo] >= 0)
                                continue;
                        unsigned hi = lo;
                        while (hi + 1 < b->n && result[hi + 1] < 0)
                                hi++;
                        any = true;
                        r = fetch_run(vol, b, lo, hi, deadline, result);
                        lo = hi;
                }
                if (!any || r < 0)
                        break;
        }
        /*
         * Verified chunks are published first, so that readers waiting for them
         * go on while the batch is written to the cache; the entries stay
         * pinned until the write is done.
         */
        pthread_mutex_lock(&vol->lock);
        for (unsigned i = 0; i < b->n; i++) {
                struct mem_chunk *e = b->entries[i];
                if (result[i] >= 0) {
                        e->state = CHUNK_READY;
                        e->pins++;
                        continue;
                }
                e->state = CHUNK_FAILED;
                e->error = -EIO;
                /* Only entries[0] is pinned (by our caller); the others go now. */
                if (i > 0 && e->pins == 0)
                        table_remove(vol, e);
        }
        pthread_cond_broadcast(&vol->loaded);
        pthread_mutex_unlock(&vol->lock);

        for (unsigned i = 0; i < b->n; i++)
                b->cached[i] = vol->cache ? -EIO : -EINVAL;
        if (vol->cache) {
                /* Every verified chunk of the batch goes to the cache in one submission. */
                struct cairn_cache_item items[BATCH_MAX];
                unsigned at[BATCH_MAX];
                int written[BATCH_MAX];
                unsigned k = 0;
                for (unsigned i = 0; i < b->n; i++)
                        if (result[i] >= 0) {
                                at[k] = i;
                                items[k++] = (struct cairn_cache_item){
                                        .id = &b->entries[i]->id,
                                        .data = b->entries[i]->data,
                                        .cap = b->entries[i]->cap,
                                        .size = b->entries[i]->size,
                                };
                        }
                cairn_cache_put_batch(vol->cache, items, k, written);
                for (unsigned i = 0; i < k; i++) {
                        b->cached[at[i]] = written[i] < 0 ? written[i] : 0;
                        if (written[i] < 0)
                                cairn_debug("cache: cannot store chunk: %s", strerror(-written[i]));
                }
        }
        for (unsigned i = 0; i < b->n; i++)
                if (result[i] >= 0)
                        chunk_release(vol, b->entries[i]);
        return result[0] >= 0 ? 0 : (r == -ENOMEM ? r : -EIO);
}

/*
 * Loads a batch whose first entry was just created (pinned, LOADING): from
 * the on-disk cache, else from the store.  With extend (read-ahead, warm)
 * and a remote store the request grows over the following chunks; a
 * reader's own miss fetches only its chunk, so a random 4 KiB read pays
 * for one chunk, not for a 16 MiB window it will not use.
 */
static int chunk_fill(struct cairn_volume *vol, struct batch *b, uint64_t deadline, bool extend)
{
        struct mem_chunk *c = b->entries[0];
        if (vol->cache && cairn_cache_get_into(vol->cache, &c->id, c->data, c->cap, c->size) == 0) {
                pthread_mutex_lock(&vol->lock);
                c->state = CHUNK_READY;
                pthread_cond_broadcast(&vol->loaded);
                pthread_mutex_unlock(&vol->lock);
                return 0;
        }
        if (extend && cairn_store_is_remote(vol->store)) {
                pthread_mutex_lock(&vol->lock);
                batch_extend_locked(vol, b);
                pthread_mutex_unlock(&vol->lock);
        }
        return batch_fetch(vol, b, deadline);
}

/* Returns a pinned, loaded entry for chunk; unpin with chunk_release(). */
/*
 * deadline 0 asks for the fast path only: a chunk that is not loaded in
 * memory yet gives -EWOULDBLOCK instead of a fetch or a wait.
 */
static int chunk_acquire(struct cairn_volume *vol, uint64_t chunk, uint64_t deadline,
                         struct mem_chunk **ret)
{
        const struct cairn_manifest_chunk *mc = &vol->manifest.chunks[chunk];
        struct mem_chunk *c;
        int r;

        pthread_mutex_lock(&vol->lock);
        for (;;) {
                c = table_find(vol, &mc->id);
                if (!c)
                        break;
                if (c->state == CHUNK_READY) {
                        c->pins++;
                        lru_unlink(vol, c);
                        lru_push_front(vol, c);
                        pthread_mutex_unlock(&vol->lock);
                        *ret = c;
                        return 0;
                }
                if (!deadline) {
                        pthread_mutex_unlock(&vol->lock);
                        return -EWOULDBLOCK;
                }
                if (c->state == CHUNK_LOADING) {
                        /* Single flight: wait for the reader that is fetching it. */
                        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                                              .tv_nsec = (long)(deadline % 1000000000ull)};
                        if (pthread_cond_timedwait(&vol->loaded, &vol->lock, &ts) == ETIMEDOUT) {
                                pthread_mutex_unlock(&vol->lock);
                                return -ETIMEDOUT;
                        }
                        continue;
                }
                /* A failed load is not remembered: this reader retries. */
                if (c->pins == 0)
                        table_remove(vol, c);
                else
                        table_unlink(vol, c); /* its loader frees it on release */
                break;
        }
        if (!deadline) {
                pthread_mutex_unlock(&vol->lock);
                return -EWOULDBLOCK;
        }

        struct batch b = {.first = chunk, .n = 1};
        c = entry_new_locked(vol, mc, 1, false);
        if (!c) {
                pthread_mutex_unlock(&vol->lock);
                return -ENOMEM;
        }
        b.entries[0] = c;
        pthread_mutex_unlock(&vol->lock);

        r = chunk_fill(vol, &b, deadline, false);
        if (r < 0) {
                chunk_release(vol, c);
                return r;
        }
        *ret = c;
        return 0;
}

static void chunk_release(struct cairn_volume *vol, struct mem_chunk *c)
{
        pthread_mutex_lock(&vol->lock);
        c->pins--;
        if (c->pins == 0 && c->state == CHUNK_FAILED) {
                if (c->hnext != c) /* still in the table */
                        table_remove(vol, c);
                else
                        free_entry(vol, c);
        } else if (c->pins == 0 && vol->mem_used + vol->pool_bytes > vol->mem_limit) {
                table_trim_locked(vol);
        }
        pthread_mutex_unlock(&vol->lock);
}

/* ---- profile recording ---- */

static int profile_flush_locked(struct cairn_volume *vol)
{
        vol->record_flushed_ns = now_ns();
        return cairn_profile_write(vol->record_path, vol->record_ids, vol->record_n);
}

int cairn_volume_profile_flush(struct cairn_volume *vol)
{
        if (!vol->record_path)
                return 0;
        pthread_mutex_lock(&vol->record_lock);
        int r = profile_flush_locked(vol);
        pthread_mutex_unlock(&vol->record_lock);
        return r;
}

/* Notes the first read of chunk idx by a reader; rewrites the file every 2 s. */
static void profile_record(struct cairn_volume *vol, uint64_t idx)
{
        pthread_mutex_lock(&vol->record_lock);
        if (!vol->record_seen[idx]) {
                vol->record_seen[idx] = 1;
                if (vol->record_n == vol->record_cap) {
                        size_t ncap = vol->record_cap ? vol->record_cap * 2 : 1024;
                        void *p = realloc(vol->record_ids, ncap * sizeof(*vol->record_ids));
                        if (p) {
                                vol->record_ids = p;
                                vol->record_cap = ncap;
                        }
                }
                if (vol->record_n < vol->record_cap)
                        vol->record_ids[vol->record_n++] = vol->manifest.chunks[idx].id;
                if (now_ns() - vol->record_flushed_ns > 2000000000ull)
                        profile_flush_locked(vol);
        }
        pthread_mutex_unlock(&vol->record_lock);
}

/* ---- read-ahead ---- */

static void *prefetch_main(void *arg)
{
        struct cairn_volume *vol = arg;

        pthread_mutex_lock(&vol->lock);
        for (;;) {
                while (!vol->stopping && vol->queue_len == 0)
                        pthread_cond_wait(&vol->queue_cond, &vol->lock);
                if (vol->stopping)
                        break;
                uint64_t idx = vol->queue[vol->queue_head];
                vol->queue_head = (vol->queue_head + 1) % QUEUE_LEN;
                vol->queue_len--;

                const struct cairn_manifest_chunk *mc = &vol->manifest.chunks[idx];
                if (table_find(vol, &mc->id))
                        continue; /* loaded, loading, or joined another batch */
                /* Read-ahead never pushes past the budget. */
                struct mem_chunk *c = entry_new_locked(vol, mc, 1, true);
                if (!c)
                        continue;
                c->ahead = true;
                struct batch b = {.first = idx, .n = 1, .ahead = true, .entries = {c}};
                pthread_mutex_unlock(&vol->lock);
                /* Failures are not reported: the reader retries when it gets there. */
                chunk_fill(vol, &b, now_ns() + vol->deadline_ns, true);
                chunk_release(vol, c);
                pthread_mutex_lock(&vol->lock);
        }
        pthread_mutex_unlock(&vol->lock);
        return NULL;
}

/*
 * Threads start on first use, not in cairn_volume_open(): cairnfs forks
 * into the background after opening the volume, and threads do not
 * survive a fork.  Called with lock held.
 */
static void prefetch_start_locked(struct cairn_volume *vol)
{
        if (vol->workers_started)
                return;
        vol->workers_started = true;
        for (unsigned i = 0; i < PREFETCH_WORKERS; i++) {
                if (pthread_create(&vol->workers[i], NULL, prefetch_main, vol) != 0)
                        break;
                vol->nworkers++;
        }
}

static struct stream *stream_get_locked(struct cairn_volume *vol, uint32_t ino)
{
        struct stream *oldest = &vol->streams[0];
        for (size_t i = 0; i < STREAMS; i++) {
                struct stream *s = &vol->streams[i];
                if (s->used && s->ino == ino)
                        return s;
                if (!s->used || (oldest->used && s->last_use < oldest->last_use))
                        oldest = s;
        }
        *oldest = (struct stream){.ino = ino, .used = true};
        return oldest;
}

/*
 * After a successful read of [off, off + len) of ino: a read that starts
 * where the previous one ended grows the stream's window (doubling up to
 * window_max) and queues the chunks up to that far ahead; any other read
 * resets it, so random access costs no read-ahead.
 */
static void prefetch_note(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                          uint64_t last_chunk)
{
        const struct cairn_manifest *m = &vol->manifest;
        const struct cairn_manifest_inode *inode = &m->inodes[ino];

        pthread_mutex_lock(&vol->lock);
        struct stream *s = stream_get_locked(vol, ino);
        s->last_use = ++vol->stream_clock;
        /*
         * The kernel's readahead sends a stream's reads several at a time and
         * they complete in any order, so "sequential" means near where the
         * stream got to, not exactly there.
         */
        bool sequential = off > 0 && off + SEQ_SLACK >= s->next_off &&
                          off <= s->next_off + SEQ_SLACK;
        if (sequential) {
                s->window = s->window ? s->window * 2 : WINDOW_MIN;
                if (s->window > vol->window_max)
                        s->window = vol->window_max;
        } else {
                s->window = 0;
                s->queued_to = 0;
        }
        if (!sequential || off + len > s->next_off)
                s->next_off = off + len;
        if (s->window) {
                uint64_t end_chunk = inode->first + inode->count;
                uint64_t target = s->next_off + s->window;
                uint64_t idx = s->queued_to > last_chunk + 1 ? s->queued_to : last_chunk + 1;
                for (; idx < end_chunk && vol->queue_len < QUEUE_LEN; idx++) {
                        if (m->chunks[idx].file_offset >= target)
                                break;
                        vol->queue[(vol->queue_head + vol->queue_len) % QUEUE_LEN] = idx;
                        vol->queue_len++;
                }
                s->queued_to = idx;
                if (vol->queue_len) {
                        prefetch_start_locked(vol);
                        pthread_cond_broadcast(&vol->queue_cond);
                }
        }
        pthread_mutex_unlock(&vol->lock);
}

/*
 * Where a read's bytes are: in pinned chunk buffers (handed to the reply
 * as they are, no copy) or, for the synchronous API and for reads that
 * span more chunks than PIN_SEGMENTS (volumes built with tiny chunks),
 * copied into a flat buffer.
 */
#define PIN_SEGMENTS 16

struct read_sink {
        uint8_t *buf;                 /* copy mode: the flat destination */
        bool owned;                   /* buf was allocated here (pin overflow) */
        unsigned n;                   /* pinned segments */
        struct mem_chunk *pinned[PIN_SEGMENTS];
        struct iovec iov[PIN_SEGMENTS];
};

static void sink_release(struct cairn_volume *vol, struct read_sink *k)
{
        for (unsigned i = 0; i < k->n; i++)
                chunk_release(vol, k->pinned[i]);
        k->n = 0;
        if (k->owned) {
                free(k->buf);
                k->buf = NULL;
                k->owned = false;
        }
}

/*
 * Takes n bytes at data (inside pinned chunk c) as the next part of a read
 * of len bytes, done of which are taken.  The sink keeps c pinned, or
 * copies and releases it.  -ENOMEM leaves c to the caller.
 */
static int sink_take(struct cairn_volume *vol, struct read_sink *k, struct mem_chunk *c,
                     const uint8_t *data, size_t n, size_t done, size_t len)
{
        if (!k->buf && k->n == PIN_SEGMENTS) {
                /* Too many pieces: switch this read to a flat copy. */
                uint8_t *flat = malloc(len);
                if (!flat)
                        return -ENOMEM;
                size_t at = 0;
                for (unsigned i = 0; i < k->n; i++) {
                        memcpy(flat + at, k->iov[i].iov_base, k->iov[i].iov_len);
                        at += k->iov[i].iov_len;
                        chunk_release(vol, k->pinned[i]);
                }
                k->n = 0;
                k->buf = flat;
                k->owned = true;
        }
        if (k->buf) {
                memcpy(k->buf + done, data, n);
                chunk_release(vol, c);
                return 0;
        }
        k->pinned[k->n] = c;
        k->iov[k->n] = (struct iovec){.iov_base = (void *)data, .iov_len = n};
        k->n++;
        return 0;
}

/*
 * Notes that a reader was handed n more bytes of c.  A chunk read to its
 * end goes to the cold end of the LRU: streams rarely come back to it (the
 * kernel's page cache has those pages), so it should go before chunks that
 * readers have not reached yet.
 */
static void chunk_served(struct cairn_volume *vol, struct mem_chunk *c, size_t n)
{
        pthread_mutex_lock(&vol->lock);
        c->ahead = false;
        c->served = n >= c->size - c->served ? c->size : c->served + (uint32_t)n;
        if (c->served == c->size && c->hnext != c) {
                lru_unlink(vol, c);
                lru_push_back(vol, c);
        }
        pthread_mutex_unlock(&vol->lock);
}

/*
 * A read of up to len bytes into the sink; nonblock: only from chunks
 * already in memory, else -EWOULDBLOCK.  deadline: absolute, taken when the
 * request arrived (time spent queued counts); 0 means now + the volume's
 * deadline.  On failure the sink holds nothing.
 */
static ssize_t volume_read(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                           struct read_sink *k, bool nonblock, uint64_t deadline)
{
        const struct cairn_manifest *m = &vol->manifest;
        uint64_t idx;
        size_t done = 0;
        int r;

        if (ino >= m->hdr->inode_count)
                return -EINVAL;
        const struct cairn_manifest_inode *inode = &m->inodes[ino];
        if ((inode->mode & S_IFMT) == S_IFDIR)
                return -EISDIR;
        if ((inode->mode & S_IFMT) != S_IFREG)
                return -EINVAL;
        if (off >= inode->size || len == 0)
                return 0;
        if (len > inode->size - off)
                len = (size_t)(inode->size - off);

        r = cairn_manifest_find_chunk(m, ino, off, &idx);
        if (r < 0)
                return r == -ENXIO ? 0 : r;
        if (nonblock)
                deadline = 0;
        else if (!deadline)
                deadline = now_ns() + vol->deadline_ns;
        while (done < len) {
                const struct cairn_manifest_chunk *mc = &m->chunks[idx];
                struct mem_chunk *c = NULL;
                r = chunk_acquire(vol, idx, deadline, &c);
                /*
                 * Never return a short count for a failed chunk: to the kernel a
                 * short read means end of file, and it would zero-fill the rest.
                 */
                if (r < 0) {
                        sink_release(vol, k);
                        return r == -ENOMEM || r == -EWOULDBLOCK ? r : -EIO;
                }
                uint64_t in_chunk = off + done - mc->file_offset;
                size_t n = mc->size - in_chunk;
                if (n > len - done)
                        n = len - done;
                chunk_served(vol, c, n);
                r = sink_take(vol, k, c, c->data + in_chunk, n, done, len);
                if (r < 0) {
                        chunk_release(vol, c);
                        sink_release(vol, k);
                        return r;
                }
                if (vol->record_path)
                        profile_record(vol, idx);
                done += n;
                idx++;
        }
        prefetch_note(vol, ino, off, len, idx - 1);
        return (ssize_t)done;
}

ssize_t cairn_volume_read(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                          void *buf)
{
        struct read_sink k = {.buf = buf};
        return volume_read(vol, ino, off, len, &k, false, 0);
}

/* Hands a finished read to its reply and lets go of its chunks. */
static void read_reply(struct cairn_volume *vol, struct read_sink *k, ssize_t n,
                       cairn_volume_reply_fn reply, void *ctx)
{
        if (n <= 0) {
                reply(ctx, NULL, 0, n);
        } else if (k->buf) {
                struct iovec one = {.iov_base = k->buf, .iov_len = (size_t)n};
                reply(ctx, &one, 1, n);
        } else {
                reply(ctx, k->iov, k->n, n);
        }
        sink_release(vol, k);
}

/* ---- asynchronous reads ---- */

struct read_req {
        struct read_req *next;
        uint64_t deadline; /* from when the request arrived */
        uint32_t ino;
        uint64_t off;
        size_t len;
        cairn_volume_reply_fn reply;
        void *ctx;
};

static void *reader_main(void *arg)
{
        struct cairn_volume *vol = arg;
        pthread_mutex_lock(&vol->lock);
        for (;;) {
                while (!vol->rq_head && !vol->stopping)
                        pthread_cond_wait(&vol->rq_cond, &vol->lock);
                struct read_req *q = vol->rq_head;
                if (!q)
                        break; /* stopping, queue drained */
                vol->rq_head = q->next;
                if (!vol->rq_head)
                        vol->rq_tail = NULL;
                pthread_mutex_unlock(&vol->lock);
                struct read_sink k = {0};
                ssize_t n = vol->stopping ? -ECANCELED
                                          : volume_read(vol, q->ino, q->off, q->len, &k, false,
                                                        q->deadline);
                read_reply(vol, &k, n, q->reply, q->ctx);
                free(q);
                pthread_mutex_lock(&vol->lock);
        }
        pthread_mutex_unlock(&vol->lock);
        return NULL;
}

int cairn_volume_read_pinned_async(struct cairn_volume *vol, uint32_t ino, uint64_t off,
                                   size_t len, cairn_volume_reply_fn reply, void *ctx)
{
        uint64_t deadline = now_ns() + vol->deadline_ns;
        struct read_sink k = {0};
        ssize_t n = volume_read(vol, ino, off, len, &k, true, 0);
        if (n != -EWOULDBLOCK) {
                read_reply(vol, &k, n, reply, ctx);
                return 0;
        }
        struct read_req *q = malloc(sizeof(*q));
        if (!q)
                return -ENOMEM;
        *q = (struct read_req){.deadline = deadline, .ino = ino, .off = off, .len = len,
                               .reply = reply, .ctx = ctx};
        pthread_mutex_lock(&vol->lock);
        if (vol->stopping) {
                pthread_mutex_unlock(&vol->lock);
                free(q);
                return -ECANCELED;
        }
        if (!vol->readers_started) {
                vol->readers_started = true;
                for (unsigned i = 0; i < READERS; i++) {
                        if (pthread_create(&vol->readers[i], NULL, reader_main, vol) != 0)
                                break;
                        vol->nreaders++;
                }
        }
        if (vol->nreaders == 0) {
                pthread_mutex_unlock(&vol->lock);
                free(q);
                n = volume_read(vol, ino, off, len, &k, false, deadline);
                read_reply(vol, &k, n, reply, ctx);
                return 0;
        }
        if (vol->rq_tail)
                vol->rq_tail->next = q;
        else
                vol->rq_head = q;
        vol->rq_tail = q;
        pthread_cond_signal(&vol->rq_cond);
        pthread_mutex_unlock(&vol->lock);
        return 0;
}

/* cairn_volume_read_async on top of the pinned reads: the reply copies into buf. */
struct copy_read {
        void *buf;
        cairn_volume_read_done_fn done;
        void *ctx;
};

static void copy_reply(void *ctx, const struct iovec *iov, unsigned iovcnt, ssize_t result)
{
        struct copy_read *cr = ctx;
        size_t at = 0;
        for (unsigned i = 0; i < iovcnt; i++) {
                memcpy((uint8_t *)cr->buf + at, iov[i].iov_base, iov[i].iov_len);
                at += iov[i].iov_len;
        }
        cr->done(cr->ctx, result);
        free(cr);
}

int cairn_volume_read_async(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                            void *buf, cairn_volume_read_done_fn done, void *ctx)
{
        struct copy_read *cr = malloc(sizeof(*cr));
        if (!cr)
                return -ENOMEM;
        *cr = (struct copy_read){.buf = buf, .done = done, .ctx = ctx};
        int r = cairn_volume_read_pinned_async(vol, ino, off, len, copy_reply, cr);
        if (r < 0)
                free(cr);
        return r;
}

/* ---- warm ---- */

struct warm {
        struct cairn_volume *vol;
        const uint64_t *chunks;
        size_t n;
        uint64_t rate;               /* bytes per second, 0: unbounded */
        uint64_t started_ns;
        uint64_t issued;             /* bytes taken so far, for the rate; protected by lock */
        unsigned parallel;
        uint8_t *cached_before;      /* per list entry */
        size_t next;                 /* next list entry to take; protected by lock */
        size_t running;              /* workers still running; protected by lock */
        struct cairn_warm_progress p; /* protected by lock */
        pthread_mutex_t lock;
        pthread_cond_t done;
};

static void warm_settle(struct warm *w, const struct cairn_manifest_chunk *c, int result,
                        uint64_t fetched_chunks, uint64_t fetched_bytes, uint64_t stored)
{
        pthread_mutex_lock(&w->lock);
        w->p.chunks_done++;
        w->p.bytes_done += c->size;
        if (result < 0)
                w->p.chunks_failed++;
        w->p.chunks_fetched += fetched_chunks;
        w->p.bytes_fetched += fetched_bytes;
        w->p.stored_fetched += stored;
        pthread_mutex_unlock(&w->lock);
}

/*
 * Lets go of a warm batch: its chunks are in the cache now, so their
 * memory is the first to be reused (the LRU's cold end), not kept from
 * readers.  entries[0] is ours (pinned); the others may have been taken
 * by readers or evicted already, so they are looked up again.
 */
static void warm_release(struct cairn_volume *vol, struct batch *b)
{
        const struct cairn_manifest *m = &vol->manifest;
        pthread_mutex_lock(&vol->lock);
        for (unsigned k = 1; k < b->n; k++) {
                struct mem_chunk *e = table_find(vol, &m->chunks[b->first + k].id);
                if (e && e->state == CHUNK_READY && e->pins == 0 && e->served == 0) {
                        lru_unlink(vol, e);
                        lru_push_back(vol, e);
                }
        }
        struct mem_chunk *c = b->entries[0];
        if (c->state == CHUNK_READY && c->pins == 1 && c->served == 0 && c->hnext != c) {
                lru_unlink(vol, c);
                lru_push_back(vol, c);
        }
        pthread_mutex_unlock(&vol->lock);
        chunk_release(vol, c);
}

static void *warm_main(void *arg)
{
        struct warm *w = arg;
        struct cairn_volume *vol = w->vol;
        const struct cairn_manifest *m = &vol->manifest;

        for (;;) {
                pthread_mutex_lock(&w->lock);
                size_t i = w->next < w->n ? w->next++ : w->n;
                uint64_t issued = i < w->n ? (w->issued += m->chunks[w->chunks[i]].size) : 0;
                pthread_mutex_unlock(&w->lock);
                if (i == w->n || __atomic_load_n(&vol->stopping, __ATOMIC_RELAXED))
                        break;
                if (w->rate) {
                        /* Token bucket: never run ahead of rate since the start. */
                        uint64_t due = w->started_ns + issued * 1000000000ull / w->rate;
                        while (now_ns() < due && !__atomic_load_n(&vol->stopping, __ATOMIC_RELAXED)) {
                                uint64_t left = due - now_ns();
                                struct timespec ts = {.tv_sec = 0,
                                                      .tv_nsec = (long)(left > 100000000ull
                                                                                ? 100000000ull
                                                                                : left)};
                                nanosleep(&ts, NULL);
                        }
                }
                uint64_t idx = w->chunks[i];
                const struct cairn_manifest_chunk *mc = &m->chunks[idx];
                if (w->cached_before[i] || cairn_cache_contains(vol->cache, &mc->id)) {
                        /* Cached before, or fetched since with an earlier batch. */
                        warm_settle(w, mc, 0, 0, 0, 0);
                        continue;
                }
                pthread_mutex_lock(&vol->lock);
                struct mem_chunk *c = table_find(vol, &mc->id);
                if (c) {
                        /* Another reader is on it; wait through the normal path. */
                        pthread_mutex_unlock(&vol->lock);
                        struct mem_chunk *got = NULL;
                        int r = chunk_acquire(vol, idx, now_ns() + vol->deadline_ns, &got);
                        if (r >= 0) {
                                if (!cairn_cache_contains(vol->cache, &mc->id))
                                        r = cairn_cache_put(vol->cache, &mc->id, got->data,
                                                            got->size);
                                chunk_release(vol, got);
                        }
                        warm_settle(w, mc, r, 0, 0, 0);
                        continue;
                }
                c = entry_new_locked(vol, mc, 1, false);
                if (!c) {
                        pthread_mutex_unlock(&vol->lock);
                        warm_settle(w, mc, -ENOMEM, 0, 0, 0);
                        continue;
                }
                struct batch b = {.first = idx, .n = 1, .entries = {c}};
                if (cairn_store_is_remote(vol->store))
                        batch_extend_locked(vol, &b);
                pthread_mutex_unlock(&vol->lock);

                int r = batch_fetch(vol, &b, now_ns() + vol->deadline_ns);
                uint64_t chunks = 0, bytes = 0, stored = 0;
                for (unsigned k = 0; k < b.n; k++) {
                        const struct cairn_manifest_chunk *bc = &m->chunks[b.first + k];
                        stored += bc->stored_size;
                        /* Fetched means in the cache now: a refused write (full) is no success. */
                        if (b.cached[k] == 0) {
                                chunks++;
                                bytes += bc->size;
                        }
                }
                if (r >= 0 && b.cached[0] < 0)
                        r = b.cached[0];
                warm_release(vol, &b);
                warm_settle(w, mc, r, chunks, bytes, stored);
        }
        pthread_mutex_lock(&w->lock);
        w->running--;
        pthread_cond_broadcast(&w->done);
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

static int cairn_volume_warm_run(struct warm *wp,
                                 void (*progress)(const struct cairn_warm_progress *p, void *ctx),
                                 void *ctx, struct cairn_warm_progress *ret_progress)
{
        struct warm w = *wp;
        struct cairn_volume *vol = w.vol;
        const uint64_t *chunks = w.chunks;
        size_t n = w.n;
        unsigned parallel = w.parallel;
        const struct cairn_manifest *m = &vol->manifest;
        pthread_t threads[64];
        unsigned started = 0;
        int r = 0;

        w.started_ns = now_ns();
        if (!vol->cache)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (chunks[i] >= m->hdr->chunk_count)
                        return -EINVAL;
        if (parallel == 0)
                parallel = 1;
        if (parallel > 64)
                parallel = 64;
        w.cached_before = calloc(n ? n : 1, 1);
        if (!w.cached_before)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct cairn_manifest_chunk *c = &m->chunks[chunks[i]];
                w.p.chunks_total++;
                w.p.bytes_total += c->size;
                if (cairn_cache_contains(vol->cache, &c->id)) {
                        w.cached_before[i] = 1;
                        w.p.chunks_cached++;
                        w.p.bytes_cached += c->size;
                }
        }
        pthread_mutex_init(&w.lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&w.done, &attr);
        pthread_condattr_destroy(&attr);

        pthread_mutex_lock(&w.lock);
        for (; started < parallel; started++) {
                if (pthread_create(&threads[started], NULL, warm_main, &w) != 0)
                        break;
                w.running++;
        }
        if (started == 0) {
                pthread_mutex_unlock(&w.lock);
                r = -EAGAIN;
                goto out;
        }
        while (w.running) {
                uint64_t wake = now_ns() + 200000000ull;
                struct timespec ts = {.tv_sec = (time_t)(wake / 1000000000ull),
                                      .tv_nsec = (long)(wake % 1000000000ull)};
                pthread_cond_timedwait(&w.done, &w.lock, &ts);
                if (progress) {
                        struct cairn_warm_progress snap = w.p;
                        pthread_mutex_unlock(&w.lock);
                        progress(&snap, ctx);
                        pthread_mutex_lock(&w.lock);
                }
        }
        pthread_mutex_unlock(&w.lock);
        for (unsigned i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        if (progress)
                progress(&w.p, ctx);
        r = w.p.chunks_failed ? -EIO : 0;
out:
        if (ret_progress)
                *ret_progress = w.p;
        pthread_cond_destroy(&w.done);
        pthread_mutex_destroy(&w.lock);
        free(w.cached_before);
        return r;
}

int cairn_volume_warm(struct cairn_volume *vol, const uint64_t *chunks, size_t n,
                      unsigned parallel,
                      void (*progress)(const struct cairn_warm_progress *p, void *ctx), void *ctx,
                      struct cairn_warm_progress *ret_progress)
{
        struct warm w = {.vol = vol, .chunks = chunks, .n = n, .parallel = parallel};
        return cairn_volume_warm_run(&w, progress, ctx, ret_progress);
}

static void *background_main(void *arg)
{
        struct warm *w = arg;
        struct cairn_warm_progress p;
        int r = cairn_volume_warm_run(w, NULL, NULL, &p);
        cairn_debug("background prefetch: %llu chunks fetched, %llu failed (%d)",
                    (unsigned long long)p.chunks_fetched, (unsigned long long)p.chunks_failed, r);
        free((void *)w->chunks);
        free(w);
        return NULL;
}

int cairn_volume_prefetch_background(struct cairn_volume *vol, const uint64_t *chunks, size_t n,
                                     unsigned parallel, uint64_t rate_bytes_per_s)
{
        if (!vol->cache)
                return -EINVAL;
        if (vol->bg)
                return -EBUSY;
        struct warm *w = calloc(1, sizeof(*w));
        uint64_t *copy = malloc((n ? n : 1) * sizeof(*copy));
        if (!w || !copy) {
                free(w);
                free(copy);
                return -ENOMEM;
        }
        memcpy(copy, chunks, n * sizeof(*copy));
        *w = (struct warm){.vol = vol, .chunks = copy, .n = n, .rate = rate_bytes_per_s,
                           .parallel = parallel};
        vol->bg = w;
        int r = pthread_create(&vol->bg_thread, NULL, background_main, w);
        if (r != 0) {
                vol->bg = NULL;
                free(copy);
                free(w);
                return -r;
        }
        return 0;
}

int cairn_volume_all_chunks(const struct cairn_volume *vol, uint64_t **ret_chunks, size_t *ret_n)
{
        const struct cairn_manifest *m = &vol->manifest;
        size_t n = 0;
        uint64_t *out = malloc((m->hdr->chunk_count ? m->hdr->chunk_count : 1) * sizeof(*out));
        if (!out)
                return -ENOMEM;
        for (uint32_t ino = 0; ino < m->hdr->inode_count; ino++) {
                const struct cairn_manifest_inode *in = &m->inodes[ino];
                if ((in->mode & S_IFMT) != S_IFREG)
                        continue;
                for (uint64_t k = 0; k < in->count && n < m->hdr->chunk_count; k++)
                        out[n++] = in->first + k;
        }
        *ret_chunks = out;
        *ret_n = n;
        return 0;
}
