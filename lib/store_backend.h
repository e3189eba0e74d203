/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The store vtable behind include/cairn/store.h.  Each transport fills one
 * of these; store.c parses URLs, validates arguments once and dispatches,
 * so transports never see a malformed name, tag or digest.
 */
#pragma once

#include <sys/uio.h>

#include "cairn/store.h"

struct cairn_store_ops {
        int (*read_ref)(struct cairn_store *s, const char *name, const char *tag,
                        struct cairn_digest *ret_digest);
        int (*write_ref)(struct cairn_store *s, const char *name, const char *tag,
                         const struct cairn_digest *digest);
        int (*blob_size)(struct cairn_store *s, const struct cairn_digest *d, uint64_t *ret_size);
        /*
         * Reads len bytes at offset into iov[0..iovcnt) in order.  store.c has
         * checked the list (1 to CAIRN_STORE_IOV_MAX entries, no NULL buffer of
         * non-zero length) and that len is its total and offset + len does not
         * overflow.  len 0 asks for nothing.
         */
        int (*read_blob)(struct cairn_store *s, const struct cairn_digest *d, uint64_t offset,
                         const struct iovec *iov, unsigned iovcnt, size_t len,
                         uint64_t deadline_ns);
        int (*open_blob_fd)(struct cairn_store *s, const struct cairn_digest *d, int *ret_fd);
        int (*copy_blob_to_fd)(struct cairn_store *s, const struct cairn_digest *d, int fd,
                               uint64_t max_size, uint64_t *ret_size);
        int (*remove_blob)(struct cairn_store *s, const struct cairn_digest *d);
        int (*blob_writer_new)(struct cairn_store *s, struct cairn_blob_writer **ret_writer);
        void (*free)(struct cairn_store *s);
};

/* Common head of every store; transports embed it first. */
struct cairn_store {
        const struct cairn_store_ops *ops;
        char *url;
        bool remote;
};

/* Common head of every blob writer; transports embed it first. */
struct cairn_blob_writer_ops {
        int (*write)(struct cairn_blob_writer *w, const void *data, size_t len);
        int (*commit)(struct cairn_blob_writer *w, const struct cairn_digest *digest,
                      bool *ret_created);
        void (*free)(struct cairn_blob_writer *w);
};

struct cairn_sha256_ctx;

struct cairn_blob_writer {
        const struct cairn_blob_writer_ops *ops;
        struct cairn_sha256_ctx *hash;
        uint64_t size;
        bool failed; /* a write failed: commit is refused */
};

/*
 * Transports.  Each returns -errno and, for remote ones, a one-line reason
 * in errbuf that never contains a secret.
 */
int cairn_store_file_open(const char *path, bool create, struct cairn_store **ret_store);
/* url: "http://..." or "https://..."; read-only. lib/store_http.c */
int cairn_store_http_open(const char *url, const struct cairn_store_options *opts,
                          struct cairn_store **ret_store, char *errbuf, size_t errlen);
/* url: "s3://BUCKET[/PREFIX]". lib/store_s3.c */
int cairn_store_s3_open(const char *url, const struct cairn_store_options *opts,
                        struct cairn_store **ret_store, char *errbuf, size_t errlen);
