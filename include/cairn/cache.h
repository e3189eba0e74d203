/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node-local chunk cache: verified, uncompressed chunks stored as
 * content-addressed files under DIR/chunks/<2 hex>/<64 hex>, plus verified
 * manifests under DIR/manifests/<64 hex>.
 *
 * Entries are written to DIR/tmp and renamed into place, so a reader never
 * sees a partial entry; each chunk entry carries a trailer with its length
 * and a CRC-32C of its bytes, checked on every read, so damage on local
 * disk is detected and the entry dropped.  Several processes may share one
 * cache directory.
 *
 * I/O: an entry is the chunk's bytes at offset 0, padded so that the file
 * is a whole number of 4 KiB blocks (FORMAT.md section 10), which lets
 * entries be read and written with O_DIRECT: no copy through the page
 * cache, and no second copy of bytes that the FUSE file pages hold
 * already.  Where the cache's filesystem refuses O_DIRECT the same layout
 * is read and written through the page cache.
 *
 * Size: every entry is accounted (its file length, a multiple of 4 KiB) in a
 * shared counter in DIR/usage, updated atomically by every process.  Space
 * is reserved before an entry is written, so with a size limit the cache
 * never holds more than the limit, at any moment, whoever writes to it.
 * When a reservation does not fit, entries are evicted least recently used
 * first (last use = mtime, refreshed on hits); eviction samples a few of
 * the 256 shard directories instead of ranking every entry, so its cost
 * does not grow with the cache.  A free-space floor is kept the same way.
 * Nothing is scanned at open.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/digest.h"

#define CAIRN_CACHE_ENTRY_MAGIC "CAIRNCE2"
/* The trailer (magic, size, CRC-32C) in the last bytes of every entry file. */
#define CAIRN_CACHE_ENTRY_TRAILER_SIZE 16u
/* Entry files, and the buffers of the zero-copy paths, come in these units. */
#define CAIRN_CACHE_IO_ALIGN 4096u

/*
 * Length of the entry file of a size-byte chunk, and the capacity a
 * CAIRN_CACHE_IO_ALIGN-aligned buffer needs for a read to land in it
 * without a copy: roundup(size + 16, 4096).
 */
static inline size_t cairn_cache_io_size(uint32_t size)
{
        return ((size_t)size + CAIRN_CACHE_ENTRY_TRAILER_SIZE + CAIRN_CACHE_IO_ALIGN - 1) &
               ~(size_t)(CAIRN_CACHE_IO_ALIGN - 1);
}

struct cairn_cache;

struct cairn_cache_options {
        uint64_t max_bytes;         /* 0: no size limit */
        unsigned min_free_percent;  /* keep this much of the filesystem free; 0: default 10 */
        bool no_free_floor;         /* disable the free-space floor */
        bool buffered_io;           /* never use O_DIRECT (it is probed for otherwise) */
};

#define CAIRN_CACHE_MIN_FREE_DEFAULT 10u

/* Opens (creating if needed) the cache at dir, without limits. */
int cairn_cache_open(const char *dir, struct cairn_cache **ret_cache);
int cairn_cache_open_with(const char *dir, const struct cairn_cache_options *opts,
                          struct cairn_cache **ret_cache);
void cairn_cache_free(struct cairn_cache *cache);
const char *cairn_cache_dir(const struct cairn_cache *cache);
/*
 * True when entries are read and written with O_DIRECT: probed at open
 * (tmpfs and some other filesystems refuse it), false with buffered_io.
 */
bool cairn_cache_direct_io(const struct cairn_cache *cache);

/*
 * Reads the chunk id of exactly size bytes into buf (any buffer: the bytes
 * are copied in).  0 on a hit; -ENOENT on a miss; a damaged entry is
 * removed and reported as -ENOENT.
 */
int cairn_cache_get(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                    uint32_t size);
/*
 * The same into a buffer of cap bytes (cap >= size).  When buf is
 * CAIRN_CACHE_IO_ALIGN-aligned and cap >= cairn_cache_io_size(size) the
 * entry is read straight into it (O_DIRECT where supported): the data
 * lands at buf[0, size) and buf[size, io_size) is overwritten with the
 * padding and trailer.  An aligned buffer with less room costs a copy of
 * at most the last 4 KiB; any other buffer, a copy of the whole chunk.
 * On a miss the contents of buf[0, cap) are unspecified.
 */
int cairn_cache_get_into(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                         size_t cap, uint32_t size);
/* True when an entry for id exists (not checked: a hint for read coalescing). */
bool cairn_cache_contains(struct cairn_cache *cache, const struct cairn_digest *id);
/*
 * Stores a chunk that the caller has verified.  Failures are not fatal to
 * readers.  data is only read, never written: from a
 * CAIRN_CACHE_IO_ALIGN-aligned buffer the entry is written with O_DIRECT
 * straight from it (the last partial 4 KiB block, padding and trailer go
 * through a small block of the cache's own), from any other buffer through
 * an aligned bounce copy.
 */
int cairn_cache_put(struct cairn_cache *cache, const struct cairn_digest *id, const void *data,
                    uint32_t size);
/*
 * One chunk of a batch.  data: size bytes to store (put) or the buffer to
 * read into (get), of cap bytes (cap >= size).  The zero-copy rules are
 * those of cairn_cache_put() for writes (cap is not used) and of
 * cairn_cache_get_into() for reads.
 */
struct cairn_cache_item {
        const struct cairn_digest *id;
        void *data;
        size_t cap;
        uint32_t size;
};

/*
 * Stores several verified chunks; results[i] is what cairn_cache_put()
 * would have returned for items[i].  With io_uring each entry is one
 * linked open -> write -> close -> rename chain and the whole batch is one
 * submission, instead of five system calls per entry.
 */
void cairn_cache_put_batch(struct cairn_cache *cache, const struct cairn_cache_item *items,
                           size_t n, int *results);
/*
 * Reads several chunks; results[i] is what cairn_cache_get_into() would
 * have returned for items[i] (0 on a hit, -ENOENT on a miss or a damaged
 * entry, which is removed).  With io_uring each entry is one linked
 * statx -> open -> read -> close chain and up to 64 entries are one
 * submission; without it, one entry after the other.
 */
void cairn_cache_get_batch(struct cairn_cache *cache, const struct cairn_cache_item *items,
                           size_t n, int *results);

/*
 * What a cache directory holds besides entries and manifests: the 4 KiB
 * usage page and the blocks of its 259 directories (chunks/, manifests/,
 * tmp/ and the 256 shards of chunks/), which du counts on disk
 * filesystems.  A size limit covers them too.
 */
#define CAIRN_CACHE_FIXED_BYTES ((1u + 3u + 256u) * 4096u)

/*
 * Counts a manifest of size bytes that this process just stored in the
 * cache (at cairn_cache_manifest_path) against its size limit: the limit is
 * for the whole directory, and manifests present at open are counted then.
 * Call before the cache is shared between threads.
 */
void cairn_cache_count_manifest(struct cairn_cache *cache, uint64_t size);

/* Path of the cached manifest file for digest d (may not exist) into buf. */
int cairn_cache_manifest_path(const struct cairn_cache *cache, const struct cairn_digest *d,
                              char *buf, size_t len);

/* Bytes an entry of size data bytes occupies in the accounting: its file length. */
uint64_t cairn_cache_entry_bytes(uint32_t size);

struct cairn_cache_stats {
        uint64_t entries;           /* chunk entries found */
        uint64_t bytes;             /* their accounted bytes */
        uint64_t accounted_bytes;   /* the shared counter before the scan */
        uint64_t manifests, manifest_bytes;
        uint64_t temp_files;        /* leftovers of interrupted writes */
        uint64_t checked, damaged;  /* cairn_cache_verify */
        uint64_t evicted, evicted_bytes;
};

/* Walks the whole cache: counts entries and bytes. */
int cairn_cache_scan(struct cairn_cache *cache, struct cairn_cache_stats *ret_stats);
/*
 * Evicts least recently used entries until at most target_bytes remain,
 * removes stale temporary files, and resets the shared counter to what
 * is on disk.  Walks the whole cache.
 */
int cairn_cache_prune(struct cairn_cache *cache, uint64_t target_bytes,
                      struct cairn_cache_stats *ret_stats);
/*
 * Re-hashes every chunk entry with SHA-256 against its name and checks
 * its trailer and CRC-32C; removes those that fail.  progress (optional) is called
 * after each entry.
 */
int cairn_cache_verify(struct cairn_cache *cache,
                       void (*progress)(const struct cairn_cache_stats *st, void *ctx), void *ctx,
                       struct cairn_cache_stats *ret_stats);
/* The shared counter (bytes accounted now). */
uint64_t cairn_cache_usage(const struct cairn_cache *cache);

/* Default cache dir: /var/cache/cairn for root, $XDG_CACHE_HOME/cairn (or ~/.cache/cairn). */
int cairn_cache_default_dir(char *buf, size_t len);
