/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Store front: URL parsing and argument validation, then dispatch to the
 * transport.  Blob writers hash on the way through here, so every
 * transport names blobs the same way.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/ref.h"
#include "store_backend.h"

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

int cairn_store_open_with(const char *url, const struct cairn_store_options *opts,
                          struct cairn_store **ret_store, char *errbuf, size_t errlen)
{
        static const struct cairn_store_options defaults;
        struct cairn_store *s = NULL;
        int r;

        if (!opts)
                opts = &defaults;
        if (errbuf && errlen)
                errbuf[0] = '\0';
        if (!url || !*url) {
                set_err(errbuf, errlen, "empty store URL");
                return -EINVAL;
        }
        if (strncmp(url, "file://", 7) == 0) {
                const char *path = url + 7;
                /* Only local absolute paths: file:///abs or file://localhost/abs. */
                if (strncmp(path, "localhost/", 10) == 0)
                        path += 9;
                if (path[0] != '/') {
                        set_err(errbuf, errlen, "invalid store URL '%s': need file:///ABSOLUTE/PATH",
                                url);
                        return -EINVAL;
                }
                r = cairn_store_file_open(path, opts->create, &s);
        } else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
                r = cairn_store_http_open(url, opts, &s, errbuf, errlen);
        } else if (strncmp(url, "s3://", 5) == 0) {
                r = cairn_store_s3_open(url, opts, &s, errbuf, errlen);
        } else if (strstr(url, "://")) {
                set_err(errbuf, errlen,
                        "unsupported store URL '%s' (file://, http://, https:// or s3://)", url);
                return -EPROTONOSUPPORT;
        } else {
                r = cairn_store_file_open(url, opts->create, &s);
        }
        if (r < 0) {
                if (errbuf && errlen && !errbuf[0])
                        snprintf(errbuf, errlen, "cannot open store '%s': %s", url,
                                 r == -ENOTDIR ? "not a cairn store (no blobs/sha256)"
                                               : strerror(-r));
                return r;
        }
        s->url = strdup(url);
        if (!s->url) {
                s->ops->free(s);
                return -ENOMEM;
        }
        *ret_store = s;
        return 0;
}

int cairn_store_open(const char *url, bool create, struct cairn_store **ret_store)
{
        struct cairn_store_options opts = {.create = create};
        return cairn_store_open_with(url, &opts, ret_store, NULL, 0);
}

void cairn_store_free(struct cairn_store *store)
{
        if (!store)
                return;
        free(store->url);
        store->ops->free(store);
}

const char *cairn_store_url(const struct cairn_store *store)
{
        return store->url;
}

static bool ref_valid(const char *name, const char *tag)
{
        return cairn_ref_name_valid(name) && cairn_ref_tag_valid(tag);
}

int cairn_store_read_ref(struct cairn_store *store, const char *name, const char *tag,
                         struct cairn_digest *ret_digest)
{
        if (!ref_valid(name, tag))
                return -EINVAL;
        return store->ops->read_ref(store, name, tag, ret_digest);
}

int cairn_store_write_ref(struct cairn_store *store, const char *name, const char *tag,
                          const struct cairn_digest *digest)
{
        if (!ref_valid(name, tag))
                return -EINVAL;
        if (!store->ops->write_ref)
                return -EROFS;
        return store->ops->write_ref(store, name, tag, digest);
}

int cairn_store_blob_size(struct cairn_store *store, const struct cairn_digest *d,
                          uint64_t *ret_size)
{
        return store->ops->blob_size(store, d, ret_size);
}

int cairn_store_read_blob(struct cairn_store *store, const struct cairn_digest *d, uint64_t offset,
                          size_t len, void *buf)
{
        return cairn_store_read_blob_until(store, d, offset, len, buf, 0);
}

/* A flat read is a scatter read into one buffer: one code path per transport. */
int cairn_store_read_blob_until(struct cairn_store *store, const struct cairn_digest *d,
                                uint64_t offset, size_t len, void *buf, uint64_t deadline_ns)
{
        struct iovec iov = {.iov_base = buf, .iov_len = len};
        return cairn_store_read_blob_iov_until(store, d, offset, &iov, 1, deadline_ns);
}

int cairn_store_read_blob_iov_until(struct cairn_store *store, const struct cairn_digest *d,
                                    uint64_t offset, const struct iovec *iov, unsigned iovcnt,
                                    uint64_t deadline_ns)
{
        size_t len = 0;

        if (!iov || iovcnt == 0 || iovcnt > CAIRN_STORE_IOV_MAX)
                return -EINVAL;
        for (unsigned i = 0; i < iovcnt; i++) {
                if (iov[i].iov_len && !iov[i].iov_base)
                        return -EINVAL;
                if (len + iov[i].iov_len < len)
                        return -EINVAL;
                len += iov[i].iov_len;
        }
        if (offset + len < offset)
                return -EINVAL;
        return store->ops->read_blob(store, d, offset, iov, iovcnt, len, deadline_ns);
}

bool cairn_store_is_remote(const struct cairn_store *store)
{
        return store->remote;
}

int cairn_store_open_blob_fd(struct cairn_store *store, const struct cairn_digest *d, int *ret_fd)
{
        if (!store->ops->open_blob_fd)
                return -EOPNOTSUPP;
        return store->ops->open_blob_fd(store, d, ret_fd);
}

int cairn_store_copy_blob_to_fd(struct cairn_store *store, const struct cairn_digest *d, int fd,
                                uint64_t max_size, uint64_t *ret_size)
{
        return store->ops->copy_blob_to_fd(store, d, fd, max_size, ret_size);
}

int cairn_store_remove_blob(struct cairn_store *store, const struct cairn_digest *d)
{
        if (!store->ops->remove_blob)
                return -EROFS;
        return store->ops->remove_blob(store, d);
}

int cairn_store_blob_writer_new(struct cairn_store *store, struct cairn_blob_writer **ret_writer)
{
        struct cairn_blob_writer *w = NULL;
        int r;

        if (!store->ops->blob_writer_new)
                return -EROFS;
        r = store->ops->blob_writer_new(store, &w);
        if (r < 0)
                return r;
        r = cairn_sha256_ctx_new(&w->hash);
        if (r < 0) {
                w->ops->free(w);
                return r;
        }
        w->size = 0;
        w->failed = false;
        *ret_writer = w;
        return 0;
}

int cairn_blob_writer_write(struct cairn_blob_writer *w, const void *data, size_t len)
{
        if (w->failed)
                return -EIO;
        int r = w->ops->write(w, data, len);
        if (r < 0) {
                w->failed = true;
                return r;
        }
        cairn_sha256_ctx_update(w->hash, data, len);
        w->size += len;
        return 0;
}

uint64_t cairn_blob_writer_size(const struct cairn_blob_writer *w)
{
        return w->size;
}

int cairn_blob_writer_commit(struct cairn_blob_writer *w, struct cairn_digest *ret_digest,
                             bool *ret_created)
{
        struct cairn_digest d;
        bool created = false;

        if (w->failed)
                return -EIO;
        cairn_sha256_ctx_final(w->hash, &d);
        int r = w->ops->commit(w, &d, &created);
        if (r < 0) {
                w->failed = true;
                return r;
        }
        *ret_digest = d;
        if (ret_created)
                *ret_created = created;
        return 0;
}

void cairn_blob_writer_free(struct cairn_blob_writer *w)
{
        if (!w)
                return;
        cairn_sha256_ctx_free(w->hash);
        w->ops->free(w);
}

int cairn_store_put_blob(struct cairn_store *store, const void *data, size_t len,
                         struct cairn_digest *ret_digest, bool *ret_created)
{
        struct cairn_blob_writer *w = NULL;
        int r = cairn_store_blob_writer_new(store, &w);
        if (r < 0)
                return r;
        r = cairn_blob_writer_write(w, data, len);
        if (r >= 0)
                r = cairn_blob_writer_commit(w, ret_digest, ret_created);
        cairn_blob_writer_free(w);
        return r;
}
