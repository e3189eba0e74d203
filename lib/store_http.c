/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read-only HTTP(S) store: any static server that honours Range (for
 * example nginx serving a directory store) is a valid store, since the
 * layout is the same everywhere:
 *
 *   BASE/blobs/sha256/<hex>   GET with a range to read, HEAD for the size
 *   BASE/refs/<name>/<tag>    GET with a small cap
 *
 * Every request goes through the fetch engine, which owns retries,
 * deadlines and response validation; this file only builds URLs and maps
 * results.  No credentials are ever sent or accepted in the URL: a store
 * that needs them is an s3:// store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/fetch.h"
#include "cairn/log.h"
#include "cairn/ref.h"
#include "store_backend.h"

/* Longest base URL we accept; object URLs add at most a few hundred bytes to it. */
#define BASE_URL_MAX   2048
#define OBJECT_URL_MAX (BASE_URL_MAX + 3 * (CAIRN_REF_NAME_MAX + CAIRN_REF_TAG_MAX) + 128)
/*
 * Whole-blob streams (the manifest at mount) are not "a read": they may be
 * large.  Stall detection still catches a dead server within seconds; this
 * only bounds a slow but moving one.
 */
#define STREAM_DEADLINE_MIN_MS (10u * 60 * 1000)

struct http_store {
        struct cairn_store base;
        char *base_url; /* no trailing '/' */
        struct cairn_fetch *fetch;
        bool own_fetch;
        unsigned deadline_ms; /* per read; 0: the engine's default */
};

static struct http_store *to_http_store(struct cairn_store *s)
{
        return (struct http_store *)s;
}

/* Appends s percent-encoded (RFC 3986 unreserved kept, and '/' if keep_slash). */
static int url_append(char *buf, size_t cap, size_t *pos, const char *s, bool keep_slash)
{
        static const char hex[] = "0123456789ABCDEF";
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                             (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                             c == '~' || (keep_slash && c == '/');
                size_t need = plain ? 1 : 3;
                if (*pos + need >= cap)
                        return -ENAMETOOLONG;
                if (plain) {
                        buf[(*pos)++] = (char)c;
                } else {
                        buf[(*pos)++] = '%';
                        buf[(*pos)++] = hex[c >> 4];
                        buf[(*pos)++] = hex[c & 15];
                }
        }
        buf[*pos] = '\0';
        return 0;
}

static int url_start(const struct http_store *hs, char *buf, size_t cap, size_t *pos)
{
        int n = snprintf(buf, cap, "%s/", hs->base_url);
        if (n < 0 || (size_t)n >= cap)
                return -ENAMETOOLONG;
        *pos = (size_t)n;
        return 0;
}

static int ref_url(const struct http_store *hs, const char *name, const char *tag, char *buf,
                   size_t cap)
{
        size_t pos;
        int r = url_start(hs, buf, cap, &pos);
        if (r >= 0)
                r = url_append(buf, cap, &pos, "refs/", true);
        if (r >= 0)
                r = url_append(buf, cap, &pos, name, true); /* '/' separates name components */
        if (r >= 0)
                r = url_append(buf, cap, &pos, "/", true);
        if (r >= 0)
                r = url_append(buf, cap, &pos, tag, false);
        return r;
}

static int blob_url(const struct http_store *hs, const struct cairn_digest *d, char *buf,
                    size_t cap)
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        size_t pos;
        int r = url_start(hs, buf, cap, &pos);
        if (r < 0)
                return r;
        cairn_digest_to_hex(d, hex);
        r = url_append(buf, cap, &pos, "blobs/sha256/", true);
        if (r >= 0)
                r = url_append(buf, cap, &pos, hex, false);
        return r;
}

static struct cairn_fetch_request request_init(const char *method, const char *url)
{
        return (struct cairn_fetch_request){.method = method, .url = url, .out_fd = -1};
}

static uint64_t read_deadline(const struct http_store *hs, uint64_t deadline_ns)
{
        if (deadline_ns || !hs->deadline_ms)
                return deadline_ns; /* 0 lets the engine apply its default */
        return cairn_fetch_now_ns() + (uint64_t)hs->deadline_ms * 1000000ull;
}

static int http_read_ref(struct cairn_store *s, const char *name, const char *tag,
                         struct cairn_digest *ret_digest)
{
        struct http_store *hs = to_http_store(s);
        char url[OBJECT_URL_MAX], buf[CAIRN_REF_OBJECT_MAX];
        struct cairn_fetch_response resp;
        int r;

        r = ref_url(hs, name, tag, url, sizeof(url));
        if (r < 0)
                return r;
        struct cairn_fetch_request q = request_init("GET", url);
        q.out = buf;
        q.out_cap = sizeof(buf);
        q.deadline_ns = read_deadline(hs, 0);
        r = cairn_fetch_do(hs->fetch, &q, &resp);
        if (r == -EFBIG)
                return -EINVAL; /* no valid ref object is that long */
        if (r < 0)
                return r;
        /* An embedded NUL would hide trailing junk from the parser. */
        if (memchr(buf, '\0', (size_t)resp.body_len))
                return -EINVAL;
        return cairn_ref_object_parse(buf, (size_t)resp.body_len, ret_digest);
}

static int http_blob_size(struct cairn_store *s, const struct cairn_digest *d, uint64_t *ret_size)
{
        struct http_store *hs = to_http_store(s);
        char url[OBJECT_URL_MAX];
        struct cairn_fetch_response resp;
        int r;

        r = blob_url(hs, d, url, sizeof(url));
        if (r < 0)
                return r;
        struct cairn_fetch_request q = request_init("HEAD", url);
        q.deadline_ns = read_deadline(hs, 0);
        r = cairn_fetch_do(hs->fetch, &q, &resp);
        if (r < 0)
                return r;
        if (resp.content_length == UINT64_MAX)
                return -EIO; /* a static server always says; one that does not is no store */
        *ret_size = resp.content_length;
        return 0;
}

static int http_read_blob(struct cairn_store *s, const struct cairn_digest *d, uint64_t offset,
                          const struct iovec *iov, unsigned iovcnt, size_t len,
                          uint64_t deadline_ns)
{
        struct http_store *hs = to_http_store(s);
        char url[OBJECT_URL_MAX];
        int r;

        if (len == 0)
                return 0; /* an empty range is no request (range_len 0 would mean "all") */
        r = blob_url(hs, d, url, sizeof(url));
        if (r < 0)
                return r;
        struct cairn_fetch_request q = request_init("GET", url);
        q.range_offset = offset;
        q.range_len = len;
        q.out_iov = iov;
        q.out_iovcnt = iovcnt;
        q.deadline_ns = read_deadline(hs, deadline_ns);
        return cairn_fetch_do(hs->fetch, &q, NULL);
}

static int http_copy_blob_to_fd(struct cairn_store *s, const struct cairn_digest *d, int fd,
                                uint64_t max_size, uint64_t *ret_size)
{
        struct http_store *hs = to_http_store(s);
        char url[OBJECT_URL_MAX];
        struct cairn_fetch_response resp;
        int r;

        if (max_size == 0) {
                /* The engine reads a zero cap as "no fd"; answer from the size instead. */
                uint64_t size;
                r = http_blob_size(s, d, &size);
                if (r < 0)
                        return r;
                if (size > 0)
                        return -EFBIG;
                *ret_size = 0;
                return 0;
        }
        r = blob_url(hs, d, url, sizeof(url));
        if (r < 0)
                return r;
        unsigned ms =
            hs->deadline_ms > STREAM_DEADLINE_MIN_MS ? hs->deadline_ms : STREAM_DEADLINE_MIN_MS;
        struct cairn_fetch_request q = request_init("GET", url);
        q.out_fd = fd;
        q.out_fd_cap = max_size;
        q.deadline_ns = cairn_fetch_now_ns() + (uint64_t)ms * 1000000ull;
        r = cairn_fetch_do(hs->fetch, &q, &resp);
        if (r < 0)
                return r;
        *ret_size = resp.body_len;
        return 0;
}

static void http_free(struct cairn_store *s)
{
        struct http_store *hs = to_http_store(s);
        if (hs->own_fetch)
                cairn_fetch_free(hs->fetch);
        free(hs->base_url);
        free(hs);
}

static const struct cairn_store_ops http_ops = {
    .read_ref = http_read_ref,
    .blob_size = http_blob_size,
    .read_blob = http_read_blob,
    .copy_blob_to_fd = http_copy_blob_to_fd,
    /* open_blob_fd: no local files; write_ref, remove_blob, blob_writer_new: read-only. */
    .free = http_free,
};

static void set_err(char *errbuf, size_t errlen, const char *msg)
{
        if (errbuf && errlen)
                snprintf(errbuf, errlen, "%s", msg);
}

/*
 * Checks the base URL: http(s)://HOST[:PORT][/PATH], printable ASCII, no
 * user info (credentials do not belong in URLs), no query or fragment.
 * The URL is not quoted in messages: it might be exactly what we refuse.
 */
static int base_url_check(const char *url, char *errbuf, size_t errlen)
{
        size_t len = strlen(url);
        const char *authority = strstr(url, "://");

        if (len > BASE_URL_MAX) {
                set_err(errbuf, errlen, "store URL is too long");
                return -ENAMETOOLONG;
        }
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)url[i];
                if (c <= 0x20 || c >= 0x7f) {
                        set_err(errbuf, errlen, "store URL contains spaces or non-ASCII bytes");
                        return -EINVAL;
                }
        }
        if (!authority) {
                set_err(errbuf, errlen, "store URL has no scheme");
                return -EINVAL;
        }
        authority += 3;
        size_t alen = strcspn(authority, "/");
        if (alen == 0) {
                set_err(errbuf, errlen, "store URL has no host");
                return -EINVAL;
        }
        if (memchr(authority, '@', alen)) {
                set_err(errbuf, errlen,
                        "store URL must not contain credentials (user@host): use an s3:// store");
                return -EINVAL;
        }
        if (strpbrk(url, "?#")) {
                set_err(errbuf, errlen, "store URL must not contain a query or fragment");
                return -EINVAL;
        }
        return 0;
}

int cairn_store_http_open(const char *url, const struct cairn_store_options *opts,
                          struct cairn_store **ret_store, char *errbuf, size_t errlen)
{
        static const struct cairn_store_options defaults;
        struct http_store *hs;
        int r;

        if (!opts)
                opts = &defaults;
        r = base_url_check(url, errbuf, errlen);
        if (r < 0)
                return r;
        hs = calloc(1, sizeof(*hs));
        if (!hs)
                return -ENOMEM;
        hs->base.ops = &http_ops;
        hs->base.remote = true;
        hs->deadline_ms = opts->deadline_ms;
        hs->base_url = strdup(url);
        if (!hs->base_url) {
                r = -ENOMEM;
                goto fail;
        }
        size_t n = strlen(hs->base_url);
        size_t min = (size_t)(strstr(hs->base_url, "://") + 3 - hs->base_url) + 1;
        while (n > min && hs->base_url[n - 1] == '/')
                hs->base_url[--n] = '\0';

        if (opts->fetch) {
                hs->fetch = opts->fetch;
        } else {
                struct cairn_fetch_options fo;
                cairn_fetch_options_default(&fo);
                if (opts->max_connections)
                        fo.max_connections = opts->max_connections;
                if (opts->deadline_ms)
                        fo.deadline_ms = opts->deadline_ms;
                if (opts->ca_file)
                        fo.ca_file = opts->ca_file;
                fo.insecure = opts->insecure;
                r = cairn_fetch_new(&fo, &hs->fetch);
                if (r < 0) {
                        if (errbuf && errlen)
                                snprintf(errbuf, errlen, "cannot start the fetch engine: %s",
                                         strerror(-r));
                        goto fail;
                }
                hs->own_fetch = true;
        }
        *ret_store = &hs->base;
        return 0;
fail:
        http_free(&hs->base);
        return r;
}
