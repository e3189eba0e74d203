/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A mounted-or-inspected volume: a store, a verified manifest mapped in
 * memory, and the read path (chunk cache, fetch, decompress, verify).
 *
 * Opening reads only the manifest: it is fetched (or mapped in place from a
 * local store), its SHA-256 checked against the ref, and validated.  Reads
 * fetch only the chunks they touch; every chunk is SHA-256 verified before
 * it is cached or returned, and a mismatch is -EIO, never wrong bytes.
 * Concurrent readers of one chunk share one fetch.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "cairn/digest.h"
#include "cairn/manifest.h"
#include "cairn/ref.h"

struct cairn_store;

struct cairn_volume_options {
        const char *cache_dir;     /* NULL: no on-disk chunk cache */
        size_t memory_limit;       /* bytes of decoded chunks kept in memory; 0: default */
        unsigned deadline_ms;      /* a read fails with -EIO past this; 0: default */
        uint32_t coalesce_max;     /* remote stores: bytes per range request; 0: default */
        uint64_t cache_max_bytes;  /* chunk cache size limit; 0: none */
        const char *record_profile; /* write the first-read order of chunks here (profile.h) */
        unsigned cache_min_free_percent; /* free-space floor; 0: default (10%) */
};

#define CAIRN_VOLUME_MEMORY_DEFAULT (128u * 1024 * 1024)
/*
 * A daemon's memory_limit (cairnfs, and cairn-csi's volume_context) bounds
 * its resident memory, not only its chunk buffers: this much is set aside
 * for everything else (code and libraries, FUSE request buffers, libcurl's
 * buffers, thread stacks, allocator slack), about the resident size of a
 * daemon with its chunk budget full, rounded up (docs/BENCHMARKS.md).
 * Pages of the mapped manifest are page cache the kernel reclaims at will
 * and are not counted.  The minimum leaves chunks 32 MiB: four of the
 * largest.
 */
#define CAIRN_DAEMON_MEMORY_OVERHEAD (32u << 20)
#define CAIRN_DAEMON_MEMORY_MIN (64u << 20)
#define CAIRN_VOLUME_DEADLINE_DEFAULT_MS 30000u
#define CAIRN_VOLUME_COALESCE_DEFAULT (16u * 1024 * 1024)
/* Refetches of a range whose bytes failed verification, within the deadline. */
#define CAIRN_VOLUME_VERIFY_ATTEMPTS 8

struct cairn_volume;

/*
 * Resolves ref in store and opens the volume.  The store is borrowed and
 * must outlive the volume.  Errors: -ENOENT unknown tag or missing
 * manifest, -EINVAL invalid manifest or digest mismatch, -EIO; a one-line
 * reason goes to errbuf.  ret_volume is untouched on failure.
 */
int cairn_volume_open(struct cairn_store *store, const struct cairn_ref *ref,
                      const struct cairn_volume_options *opts, struct cairn_volume **ret_volume,
                      char *errbuf, size_t errlen);
void cairn_volume_free(struct cairn_volume *vol);

const struct cairn_manifest *cairn_volume_manifest(const struct cairn_volume *vol);
const struct cairn_digest *cairn_volume_digest(const struct cairn_volume *vol);
struct cairn_store *cairn_volume_store(const struct cairn_volume *vol);
/*
 * Why the cache directory given in the options is not in use (-errno), or
 * 0.  A cache that cannot be opened does not fail the volume: reads then
 * come from the store, and the front should say so once.
 */
int cairn_volume_cache_error(const struct cairn_volume *vol);

/*
 * Reads up to len bytes of regular file ino at off into buf.  Returns the
 * number of bytes read (short only at end of file, 0 at or past it), or
 * -EIO when a chunk cannot be fetched, fails verification on every attempt,
 * or the read's deadline passes; -EISDIR / -EINVAL for a non-file inode.
 * Thread-safe.
 */
ssize_t cairn_volume_read(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                          void *buf);

/*
 * Asynchronous read: the same as cairn_volume_read(), but when a chunk has
 * to be fetched or waited for, the read is handed to the volume's reader
 * pool and the call returns at once; done(ctx, result) runs exactly once,
 * on the calling thread when everything was in memory, else on a pool
 * thread.  buf must stay valid until then.  At cairn_volume_free() queued
 * reads complete with -ECANCELED.  Returns -ENOMEM (done not called) only
 * when the request cannot be queued.
 */
typedef void (*cairn_volume_read_done_fn)(void *ctx, ssize_t result);
int cairn_volume_read_async(struct cairn_volume *vol, uint32_t ino, uint64_t off, size_t len,
                            void *buf, cairn_volume_read_done_fn done, void *ctx);

/*
 * The same without a copy: reply(ctx, iov, iovcnt, result) gets the bytes
 * where they lie in the volume's chunk buffers, which stay valid (pinned)
 * only until reply returns; result is the byte count (the sum of the
 * iovecs), 0 at end of file, or -errno with no iovecs.  FUSE replies with
 * writev straight from them.  Runs like cairn_volume_read_async(): on the
 * calling thread when everything was in memory, else on a pool thread.
 */
typedef void (*cairn_volume_reply_fn)(void *ctx, const struct iovec *iov, unsigned iovcnt,
                                      ssize_t result);
int cairn_volume_read_pinned_async(struct cairn_volume *vol, uint32_t ino, uint64_t off,
                                   size_t len, cairn_volume_reply_fn reply, void *ctx);

/* Progress and result of cairn_volume_warm(). */
struct cairn_warm_progress {
        uint64_t chunks_total, bytes_total;    /* chunks asked for (uncompressed bytes) */
        uint64_t chunks_cached, bytes_cached;  /* already in the cache before the run */
        uint64_t chunks_done, bytes_done;      /* settled so far: cached, fetched or failed */
        uint64_t chunks_fetched, bytes_fetched;/* fetched and verified by this run */
        uint64_t stored_fetched;               /* bytes transferred from the store */
        uint64_t chunks_failed;
};

/*
 * Fills the on-disk cache with the given chunks (indexes into the chunk
 * table, in the order they should arrive) using `parallel` concurrent
 * range requests, coalescing neighbours on remote stores; every chunk is
 * verified before it is cached.  Chunks already cached are not fetched,
 * so a second run fetches nothing.  progress, if set, is called from the
 * calling thread about five times a second and once at the end.
 * Returns 0 when every chunk is cached, -EIO when any failed, -EINVAL when
 * the volume has no cache directory.
 */
int cairn_volume_warm(struct cairn_volume *vol, const uint64_t *chunks, size_t n,
                      unsigned parallel,
                      void (*progress)(const struct cairn_warm_progress *p, void *ctx), void *ctx,
                      struct cairn_warm_progress *ret_progress);

/*
 * Starts filling the cache in the background with chunks (copied), in
 * order, with `parallel` workers and at most rate_bytes_per_s of chunk
 * data per second (0: unbounded), so that foreground reads keep most of
 * the bandwidth.  Used for `--prefetch=all` and profile replay.  Stops
 * at cairn_volume_free().  Call only after any fork(): it starts threads.
 * -EINVAL without a cache directory, -EBUSY if already running.
 */
int cairn_volume_prefetch_background(struct cairn_volume *vol, const uint64_t *chunks, size_t n,
                                     unsigned parallel, uint64_t rate_bytes_per_s);

/* Every chunk of every file, in inode order: the list for `--prefetch=all`. */
int cairn_volume_all_chunks(const struct cairn_volume *vol, uint64_t **ret_chunks, size_t *ret_n);

/* Writes the recorded profile now (also done at cairn_volume_free()). */
int cairn_volume_profile_flush(struct cairn_volume *vol);

/*
 * Fetches chunk (an index into the manifest's chunk table) from the store,
 * bypassing all caches, decompresses and verifies it into buf (at least
 * chunk.size bytes).  -EIO with nothing trusted in buf on any mismatch.
 */
int cairn_volume_fetch_chunk(struct cairn_volume *vol, uint64_t chunk, void *buf);
