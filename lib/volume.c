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
#include <unistd.h>
#include <zstd.h>

#include "cairn/cache.h"
#include "cairn/log.h"
#include "cairn/store.h"
#include "cairn/volume.h"

enum chunk_state { CHUNK_LOADING, CHUNK_READY, CHUNK_FAILED };

/* A decoded chunk in memory. */
struct mem_chunk {
        struct cairn_digest id;
        uint8_t *data;
        uint32_t size;
        enum chunk_state state;
        int error;                /* when CHUNK_FAILED */
        unsigned pins;            /* readers copying out of data */
        struct mem_chunk *hnext;  /* hash chain */
        struct mem_chunk *prev, *next; /* LRU list, most recent first */
};

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
        size_t mem_used;            /* bytes of data in the table, protected by lock */
        size_t mem_limit;
};

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

static int manifest_map(struct cairn_volume *vol, char *errbuf, size_t errlen)
{
        int fd = -1, r;
        struct stat st;
        char dstr[CAIRN_DIGEST_STR_SIZE];

        cairn_digest_to_string(&vol->digest, dstr);
        r = cairn_store_open_blob_fd(vol->store, &vol->digest, &fd);
        if (r == -EOPNOTSUPP)
                r = vol->cache ? manifest_fetch_to_cache(vol, &fd) : manifest_fetch_to_memfd(vol, &fd);
        if (r < 0) {
                set_err(errbuf, errlen, "cannot read manifest '%s': %s", dstr, strerror(-r));
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
                r = -EINVAL;
                set_err(errbuf, errlen, "manifest '%s' does not match its digest", dstr);
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
        pthread_cond_init(&vol->loaded, NULL);
        vol->mem_limit = opts && opts->memory_limit ? opts->memory_limit
                                                    : CAIRN_VOLUME_MEMORY_DEFAULT;
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
                                r == -EINVAL ? "malformed ref object" : strerror(-r));
                        goto fail;
                }
        }
        if (opts && opts->cache_dir) {
                r = cairn_cache_open(opts->cache_dir, &vol->cache);
                if (r < 0) {
                        set_err(errbuf, errlen, "cannot open cache directory '%s': %s",
                                opts->cache_dir, strerror(-r));
                        goto fail;
                }
        }
        r = manifest_map(vol, errbuf, errlen);
        if (r < 0)
                goto fail;
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
        for (struct mem_chunk *c = vol->lru_head, *next; c; c = next) {
                next = c->next;
                free(c->data);
                free(c);
        }
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

struct cairn_store *cairn_volume_store(const struct cairn_volume *vol)
{
        return vol->store;
}

int cairn_volume_fetch_chunk(struct cairn_volume *vol, uint64_t chunk, void *buf)
{
        const struct cairn_manifest_chunk *c = &vol->manifest.chunks[chunk];
        const struct cairn_manifest_blob *b = &vol->manifest.blobs[c->blob];
        struct cairn_digest actual;
        uint8_t *stored = buf;
        int r;

        if (chunk >= vol->manifest.hdr->chunk_count)
                return -EINVAL;
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
                goto out;
        }
        if (c->flags & CAIRN_CHUNK_ZSTD) {
                ZSTD_DCtx *d = thread_dctx();
                if (!d) {
                        r = -ENOMEM;
                        goto out;
                }
                size_t n = ZSTD_decompressDCtx(d, buf, c->size, stored, c->stored_size);
                if (ZSTD_isError(n) || n != c->size) {
                        cairn_debug("chunk %llu: cannot decompress: %s", (unsigned long long)chunk,
                                    ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size");
                        r = -EIO;
                        goto out;
                }
        }
        cairn_sha256(buf, c->size, &actual);
        if (!cairn_digest_equal(&actual, &c->id)) {
                cairn_debug("chunk %llu: digest mismatch", (unsigned long long)chunk);
                r = -EIO;
                goto out;
        }
        r = 0;
out:
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

static void table_remove(struct cairn_volume *vol, struct mem_chunk *c)
{
        struct mem_chunk **pp = &vol->buckets[bucket_of(vol, &c->id)];
        while (*pp != c)
                pp = &(*pp)->hnext;
        *pp = c->hnext;
        lru_unlink(vol, c);
        vol->mem_used -= c->size;
        free(c->data);
        free(c);
}

/* Evicts unpinned, loaded entries from the LRU tail until need more bytes fit. */
static void table_make_room(struct cairn_volume *vol, size_t need)
{
        struct mem_chunk *c = vol->lru_tail;
        while (c && vol->mem_used + need > vol->mem_limit) {
                struct mem_chunk *prev = c->prev;
                if (c->pins == 0 && c->state != CHUNK_LOADING)
                        table_remove(vol, c);
                c = prev;
        }
}

/* Loads chunk into buf: on-disk cache, else the store (verified), then caches it. */
static int chunk_load(struct cairn_volume *vol, uint64_t chunk, uint8_t *buf)
{
        const struct cairn_manifest_chunk *c = &vol->manifest.chunks[chunk];
        if (vol->cache && cairn_cache_get(vol->cache, &c->id, buf, c->size) == 0)
                return 0;
        int r = cairn_volume_fetch_chunk(vol, chunk, buf);
        if (r < 0)
                return r;
        if (vol->cache) {
                int w = cairn_cache_put(vol->cache, &c->id, buf, c->size);
                if (w < 0)
                        cairn_debug("cache: cannot store chunk: %s", strerror(-w));
        }
        return 0;
}

/* Returns a pinned, loaded entry for chunk; unpin with chunk_release(). */
static int chunk_acquire(struct cairn_volume *vol, uint64_t chunk, struct mem_chunk **ret)
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
                if (c->state == CHUNK_LOADING) {
                        pthread_cond_wait(&vol->loaded, &vol->lock);
                        continue;
                }
                /* A failed load is not remembered: the next reader retries. */
                r = c->error;
                if (c->pins == 0)
                        table_remove(vol, c);
                pthread_mutex_unlock(&vol->lock);
                return r;
        }

        table_make_room(vol, mc->size);
        c = calloc(1, sizeof(*c));
        uint8_t *data = c ? malloc(mc->size) : NULL;
        if (!data) {
                free(c);
                pthread_mutex_unlock(&vol->lock);
                return -ENOMEM;
        }
        c->id = mc->id;
        c->data = data;
        c->size = mc->size;
        c->state = CHUNK_LOADING;
        c->pins = 1;
        size_t b = bucket_of(vol, &c->id);
        c->hnext = vol->buckets[b];
        vol->buckets[b] = c;
        lru_push_front(vol, c);
        vol->mem_used += c->size;
        pthread_mutex_unlock(&vol->lock);

        r = chunk_load(vol, chunk, c->data);

        pthread_mutex_lock(&vol->lock);
        if (r < 0) {
                c->state = CHUNK_FAILED;
                c->error = r;
                c->pins--;
                if (c->pins == 0)
                        table_remove(vol, c);
        } else {
                c->state = CHUNK_READY;
        }
        pthread_cond_broadcast(&vol->loaded);
        pthread_mutex_unlock(&vol->lock);
        if (r < 0)
                return r;
        *ret = c;
        return 0;
}

static void chunk_release(struct cairn_volume *vol, struct mem_chunk *c)
{
        pthread_mutex_lock(&vol->lock);
        c->pins--;
        if (c->pins == 0 && vol->mem_used > vol->mem_limit)
                table_make_room(vol, 0);
        pthread_mutex_unlock(&vol->lock);
}

ssize_t cairn_volume_read(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                          void *buf)
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
        while (done < len) {
                const struct cairn_manifest_chunk *mc = &m->chunks[idx];
                struct mem_chunk *c = NULL;
                r = chunk_acquire(vol, idx, &c);
                /*
                 * Never return a short count for a failed chunk: to the kernel a
                 * short read means end of file, and it would zero-fill the rest.
                 */
                if (r < 0)
                        return r;
                uint64_t in_chunk = off + done - mc->file_offset;
                size_t n = mc->size - in_chunk;
                if (n > len - done)
                        n = len - done;
                memcpy((uint8_t *)buf + done, c->data + in_chunk, n);
                chunk_release(vol, c);
                done += n;
                idx++;
        }
        return (ssize_t)done;
}
