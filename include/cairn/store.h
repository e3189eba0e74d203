/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stores: where volumes live.  Every store has the same layout
 * (docs/FORMAT.md): blobs/sha256/<hex> and refs/<name>/<tag>.
 *
 * A store is opened from a URL: "file:///abs/path" or a plain path (the
 * embedded default).  The handle is a vtable so that remote transports
 * plug in behind the same calls.  All calls are thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cairn/digest.h"

struct cairn_store;
struct cairn_fetch;

enum cairn_s3_addressing {
        CAIRN_S3_ADDRESSING_AUTO,    /* path style for custom endpoints, else virtual-hosted */
        CAIRN_S3_ADDRESSING_PATH,
        CAIRN_S3_ADDRESSING_VIRTUAL,
};

/*
 * Everything a store may be configured with.  NULL / 0 fields take the
 * AWS-style defaults (environment, then shared config files).  Strings are
 * borrowed for the duration of cairn_store_open_with() only.
 */
struct cairn_store_options {
        bool create;                 /* local stores: make the layout if missing */
        /* Remote stores: the engine to use (borrowed; NULL: the store makes its own). */
        struct cairn_fetch *fetch;
        unsigned max_connections;    /* per host; 0: default */
        unsigned deadline_ms;        /* per read; 0: default (30 s) */
        const char *ca_file;
        bool insecure;
        /* S3 */
        const char *endpoint;        /* overrides AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL */
        const char *region;          /* overrides AWS_REGION / AWS_DEFAULT_REGION */
        const char *profile;         /* overrides AWS_PROFILE */
        enum cairn_s3_addressing addressing;
        bool anonymous;              /* never sign, even if credentials are configured */
};

/*
 * Opens the store at url: "file:///abs/path" or a plain path (local),
 * "http://..." / "https://..." (read-only), "s3://BUCKET[/PREFIX]".
 * On failure returns -errno and, if errbuf is set, a one-line reason that
 * never contains a secret.
 */
int cairn_store_open_with(const char *url, const struct cairn_store_options *opts,
                          struct cairn_store **ret_store, char *errbuf, size_t errlen);

/* Opens the store at url with default options.  create: make the layout if missing (build). */
int cairn_store_open(const char *url, bool create, struct cairn_store **ret_store);
void cairn_store_free(struct cairn_store *store);
/* The URL as given (owned by the store). */
const char *cairn_store_url(const struct cairn_store *store);

/* Reads refs/<name>/<tag>: -ENOENT if there is none, -EINVAL if malformed. */
int cairn_store_read_ref(struct cairn_store *store, const char *name, const char *tag,
                         struct cairn_digest *ret_digest);
/* Writes the ref atomically (readers see the old or the new one). */
int cairn_store_write_ref(struct cairn_store *store, const char *name, const char *tag,
                          const struct cairn_digest *digest);

/* -ENOENT when absent. */
int cairn_store_blob_size(struct cairn_store *store, const struct cairn_digest *d,
                          uint64_t *ret_size);
/* Reads exactly len bytes at offset; -EIO on a short blob. Not verified. */
int cairn_store_read_blob(struct cairn_store *store, const struct cairn_digest *d, uint64_t offset,
                          size_t len, void *buf);
/*
 * The same with an absolute deadline (CLOCK_MONOTONIC ns, see
 * cairn_fetch_now_ns(); 0: the store's default): -ETIMEDOUT past it.
 */
int cairn_store_read_blob_until(struct cairn_store *store, const struct cairn_digest *d,
                                uint64_t offset, size_t len, void *buf, uint64_t deadline_ns);

/* Most iovecs one scatter read takes (Linux's IOV_MAX). */
#define CAIRN_STORE_IOV_MAX 1024u
/*
 * Scatter read: exactly sum(iov[i].iov_len) bytes at offset, into the
 * buffers in order (one range request on a remote store), with the errors
 * of cairn_store_read_blob_until().  -EINVAL for iovcnt 0 or over
 * CAIRN_STORE_IOV_MAX, a NULL buffer of non-zero length, or a total that
 * overflows; a total of 0 reads nothing, like len 0 above.  The array and
 * buffers are only used during the call.
 */
int cairn_store_read_blob_iov_until(struct cairn_store *store, const struct cairn_digest *d,
                                    uint64_t offset, const struct iovec *iov, unsigned iovcnt,
                                    uint64_t deadline_ns);
/* True for stores whose reads cost a network round trip (worth coalescing). */
bool cairn_store_is_remote(const struct cairn_store *store);
/*
 * Opens the blob as a local read-only file descriptor when the store is
 * local (caller closes it); -EOPNOTSUPP for stores without local files.
 */
int cairn_store_open_blob_fd(struct cairn_store *store, const struct cairn_digest *d, int *ret_fd);
/* Streams the whole blob into fd (from its current position); -EFBIG past max_size. */
int cairn_store_copy_blob_to_fd(struct cairn_store *store, const struct cairn_digest *d, int fd,
                                uint64_t max_size, uint64_t *ret_size);
/* Removes a blob (used to clean up after a failed build); -ENOENT if absent. */
int cairn_store_remove_blob(struct cairn_store *store, const struct cairn_digest *d);

/*
 * Writing blobs: bytes stream into a temporary object, hashed on the way;
 * commit names it by its digest (an existing identical blob is kept and
 * the temporary discarded).  _free() without commit discards it.
 */
struct cairn_blob_writer;
int cairn_store_blob_writer_new(struct cairn_store *store, struct cairn_blob_writer **ret_writer);
int cairn_blob_writer_write(struct cairn_blob_writer *w, const void *data, size_t len);
uint64_t cairn_blob_writer_size(const struct cairn_blob_writer *w);
/* ret_created: true when the blob did not exist before. */
int cairn_blob_writer_commit(struct cairn_blob_writer *w, struct cairn_digest *ret_digest,
                             bool *ret_created);
void cairn_blob_writer_free(struct cairn_blob_writer *w);

/* Convenience: one buffer as one blob. */
int cairn_store_put_blob(struct cairn_store *store, const void *data, size_t len,
                         struct cairn_digest *ret_digest, bool *ret_created);
