/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The S3 store: "s3://BUCKET[/PREFIX]" on AWS or any S3-compatible server,
 * read and write, with the same layout as every other store under PREFIX
 * (blobs/sha256/<hex>, refs/<name>/<tag>).
 *
 * Every request goes through the fetch engine, which owns retries,
 * deadlines and caps; this file only says what to ask for and how to sign
 * it.  Requests are signed with SigV4 in header form at every attempt (the
 * engine calls back before each one, so a retry after a long backoff
 * still carries a fresh date): x-amz-content-sha256 is UNSIGNED-PAYLOAD for
 * reads and the real SHA-256 of the body for writes, so the server checks
 * what it stores.  Without credentials requests go unsigned (public buckets).
 *
 * Writes: a blob streams into an unnamed temporary file under $TMPDIR
 * while the front hashes it; commit first asks (HEAD) whether the store
 * already has it, which makes rebuilds upload nothing new.  Otherwise a
 * small blob is one PUT, and a large one a multipart upload whose parts go
 * out in parallel through the engine's asynchronous API, read straight
 * from the mapped temporary file; a failed upload is aborted so that no
 * parts are left billed on the server.
 *
 * Secrets stay in the config; no URL, log line or error message built here
 * contains one, and messages that quote a server are scrubbed of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cairn/fetch.h"
#include "cairn/log.h"
#include "cairn/ref.h"
#include "cairn/s3.h"
#include "cairn/sigv4.h"
#include "cairn/fdio.h"
#include "store_backend.h"

#define MiB (1024ull * 1024)
/* Blobs from this size up go as multipart uploads. */
#define S3_MULTIPART_THRESHOLD (64 * MiB)
#define S3_PART_SIZE_DEFAULT (16 * MiB)
/* S3's limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10000 of them. */
#define S3_PART_SIZE_MIN (5 * MiB)
#define S3_PART_SIZE_MAX (5120 * MiB)
#define S3_MAX_PARTS 10000u
#define S3_UPLOAD_PARALLEL_DEFAULT 4u
#define S3_UPLOAD_PARALLEL_MAX 64u
/* Small XML responses (CreateMultipartUpload, CompleteMultipartUpload). */
#define S3_XML_RESPONSE_MAX (64u * 1024)
#define S3_UPLOAD_ID_MAX 1024
/* Uploads and whole-blob downloads get this much time per byte on top of the deadline. */
#define S3_MIN_RATE (1 * MiB) /* bytes per second */
#define S3_TRANSFER_ALLOWANCE_MAX_S 3600u

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_store {
        struct cairn_store base;
        struct cairn_fetch *fetch;
        bool own_fetch;
        struct cairn_s3_config cfg;
        bool sign;            /* false: anonymous, unsigned requests */
        char *bucket;
        char *prefix;         /* "" or "a/b/" (raw key bytes) */
        char *origin;         /* "http://host:port" or "http://bucket.host:port" */
        char *host;           /* the Host header: "host:port" or "bucket.host:port" */
        char *path_base;      /* "/bucket" (path style) or "" (virtual-hosted) */
        char *token_header;   /* "x-amz-security-token: ..." or NULL; wiped on free */
        unsigned deadline_ms; /* default per-request deadline */
        uint64_t part_size;
        unsigned upload_parallel;
};

/* What the signer needs to know about one request; lives as long as the request. */
struct s3_sign_ctx {
        const struct s3_store *store;
        const char *method;
        const char *path;  /* percent-encoded */
        const char *query; /* as sent, "" if none */
        const char *payload_hash;
};

/* One request being prepared: URL, signing context and headers. */
struct s3_req {
        struct s3_sign_ctx sign;
        char *path;
        char *url;
        const char *headers[2];
        struct cairn_fetch_request fr;
};

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

static struct s3_store *to_s3(struct cairn_store *s)
{
        return (struct s3_store *)s;
}

/*
 * A server may quote parts of a request back in its message; make sure no
 * secret ever reaches a message through that door.
 */
static void scrub(const struct s3_store *st, char *msg, size_t len)
{
        const char *secrets[] = {st->cfg.secret_key, st->cfg.session_token};
        for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
                if (!secrets[i] || strlen(secrets[i]) < 4)
                        continue;
                if (strstr(msg, secrets[i])) {
                        /* Rare enough that dropping the whole message is the right fix. */
                        snprintf(msg, len, "(message withheld)");
                }
        }
}

static bool is_auth_code(const char *code)
{
        /* XAdminUserNotFound: versitygw's (404) answer to an unknown access key. */
        static const char *const codes[] = {
                "SignatureDoesNotMatch",        "InvalidAccessKeyId",   "InvalidClientTokenId",
                "InvalidToken",                 "ExpiredToken",         "TokenRefreshRequired",
                "AuthorizationHeaderMalformed", "RequestTimeTooSkewed", "MissingSecurityHeader",
                "InvalidSecurity",              "XAdminUserNotFound",
        };
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                if (strcmp(code, codes[i]) == 0)
                        return true;
        return false;
}

/*
 * Maps the engine's result with the S3 error code: a 404 is a missing
 * object only when the server says NoSuchKey/NoSuchBucket (or says nothing,
 * as HEAD cannot); some servers answer a bad access key with 404.
 */
static int s3_result(int r, const struct cairn_fetch_response *resp)
{
        const char *code = resp->error_code;
        if (r >= 0)
                return r;
        if (code[0] && is_auth_code(code))
                return -EACCES;
        if (r == -ENOENT && code[0] && strcmp(code, "NoSuchKey") != 0 &&
            strcmp(code, "NoSuchBucket") != 0)
                return -EIO;
        return r;
}

static void s3_log_failure(const struct s3_store *st, const struct s3_req *rq, int r,
                           const struct cairn_fetch_response *resp)
{
        char msg[sizeof(resp->error_message)];
        if (cairn_log_get_level() < LOG_DEBUG)
                return;
        snprintf(msg, sizeof(msg), "%s", resp->error_message);
        scrub(st, msg, sizeof(msg));
        cairn_debug("s3: %s '%s%s%s' failed: %s (HTTP %ld%s%s%s%s, %u attempts)", rq->sign.method,
                    rq->path, rq->sign.query[0] ? "?" : "", rq->sign.query, strerror(-r),
                    resp->status, resp->error_code[0] ? " " : "", resp->error_code,
                    msg[0] ? ": " : "", msg, resp->attempts);
}

/* The sign callback: runs before every attempt, on the engine's thread. */
static int s3_sign(void *sign_ctx, const struct cairn_fetch_request *req, char headers[][512],
                   unsigned *ret_nheaders)
{
        const struct s3_sign_ctx *sc = sign_ctx;
        const struct s3_store *st = sc->store;
        struct cairn_sigv4_header h[3];
        size_t nh = 0;
        struct cairn_sigv4_result res = {0};
        int r;

        (void)req;
        h[nh++] = (struct cairn_sigv4_header){"host", st->host};
        h[nh++] = (struct cairn_sigv4_header){"x-amz-content-sha256", sc->payload_hash};
        if (st->cfg.session_token)
                h[nh++] = (struct cairn_sigv4_header){"x-amz-security-token",
                                                      st->cfg.session_token};
        struct cairn_sigv4_request sreq = {
                .method = sc->method,
                .path = sc->path,
                .query = sc->query,
                .headers = h,
                .nheaders = nh,
                .payload_hash = sc->payload_hash,
        };
        struct cairn_sigv4_params params = {
                .region = st->cfg.region,
                .service = "s3",
                .timestamp = time(NULL),
                .normalize_path = false,
        };
        struct cairn_sigv4_credentials creds = {
                .access_key = st->cfg.access_key,
                .secret_key = st->cfg.secret_key,
                .session_token = st->cfg.session_token,
        };
        r = cairn_sigv4_sign(&sreq, &params, &creds, &res);
        if (r < 0)
                return r;
        /* The Host header is sent as signed, whatever curl would have made of the URL. */
        int n[4];
        n[0] = snprintf(headers[0], 512, "Host: %s", st->host);
        n[1] = snprintf(headers[1], 512, "x-amz-date: %s", res.amz_date);
        n[2] = snprintf(headers[2], 512, "x-amz-content-sha256: %s", sc->payload_hash);
        n[3] = snprintf(headers[3], 512, "Authorization: %s", res.authorization);
        cairn_sigv4_result_release(&res);
        for (int i = 0; i < 4; i++)
                if (n[i] < 0 || n[i] >= 512)
                        return -E2BIG;
        *ret_nheaders = 4;
        return 0;
}

static void s3_req_release(struct s3_req *rq)
{
        free(rq->path);
        free(rq->url);
        *rq = (struct s3_req){0};
}

/*
 * Prepares a request for key PREFIX+rel (rel == NULL: the bucket itself).
 * query must be in the form to sign and send (names and values encoded).
 */
static int s3_req_init(struct s3_req *rq, const struct s3_store *st, const char *method,
                       const char *rel, const char *query, const char *payload_hash)
{
        char *key = NULL, *enc = NULL;
        int r;

        *rq = (struct s3_req){0};
        if (rel) {
                if (asprintf(&key, "%s%s", st->prefix, rel) < 0)
                        return -ENOMEM;
                r = cairn_sigv4_uri_encode(key, strlen(key), true, &enc);
                free(key);
                if (r < 0)
                        return r;
        }
        if (asprintf(&rq->path, "%s/%s", st->path_base, enc ? enc : "") < 0) {
                rq->path = NULL;
                free(enc);
                return -ENOMEM;
        }
        free(enc);
        if (asprintf(&rq->url, "%s%s%s%s", st->origin, rq->path, query[0] ? "?" : "", query) <
            0) {
                rq->url = NULL;
                s3_req_release(rq);
                return -ENOMEM;
        }
        rq->sign = (struct s3_sign_ctx){
                .store = st,
                .method = method,
                .path = rq->path,
                .query = query,
                .payload_hash = payload_hash,
        };
        rq->headers[0] = st->token_header; /* NULL-terminates the list when there is none */
        rq->headers[1] = NULL;
        rq->fr = (struct cairn_fetch_request){
                .method = method,
                .url = rq->url,
                .out_fd = -1,
        };
        if (st->sign) {
                rq->fr.sign = s3_sign;
                rq->fr.sign_ctx = &rq->sign;
                rq->fr.headers = rq->headers;
        }
        return 0;
}

/* Time for moving `bytes` over a slow link, on top of the default deadline. */
static uint64_t transfer_deadline(const struct s3_store *st, uint64_t bytes)
{
        uint64_t extra_s = bytes / S3_MIN_RATE;
        if (extra_s > S3_TRANSFER_ALLOWANCE_MAX_S)
                extra_s = S3_TRANSFER_ALLOWANCE_MAX_S;
        return cairn_fetch_now_ns() + (uint64_t)st->deadline_ms * 1000000ull +
               extra_s * 1000000000ull;
}

/* Runs a prepared request synchronously; the S3-aware result. */
static int s3_do(struct s3_store *st, struct s3_req *rq, struct cairn_fetch_response *resp)
{
        *resp = (struct cairn_fetch_response){0};
        int r = cairn_fetch_do(st->fetch, &rq->fr, resp);
        r = s3_result(r, resp);
        if (r < 0)
                s3_log_failure(st, rq, r, resp);
        return r;
}

static void blob_rel(const struct cairn_digest *d, char buf[static 96])
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(d, hex);
        snprintf(buf, 96, "blobs/sha256/%s", hex);
}

static int s3_read_ref(struct cairn_store *s, const char *name, const char *tag,
                       struct cairn_digest *ret_digest)
{
        struct s3_store *st = to_s3(s);
        struct cairn_fetch_response resp;
        struct s3_req rq;
        char *rel = NULL, buf[CAIRN_REF_OBJECT_MAX + 1];
        int r;

        if (asprintf(&rel, "refs/%s/%s", name, tag) < 0)
                return -ENOMEM;
        r = s3_req_init(&rq, st, "GET", rel, "", "UNSIGNED-PAYLOAD");
        free(rel);
        if (r < 0)
                return r;
        rq.fr.out = buf;
        rq.fr.out_cap = sizeof(buf);
        r = s3_do(st, &rq, &resp);
        if (r == -EFBIG)
                r = -EINVAL; /* far longer than any ref: not one */
        if (r >= 0) {
                size_t n = (size_t)resp.body_len;
                if (n > sizeof(buf) || memchr(buf, '\0', n))
                        r = -EINVAL;
                else
                        r = cairn_ref_object_parse(buf, n, ret_digest);
        }
        s3_req_release(&rq);
        return r;
}

/* PUT of a body held in memory whose SHA-256 is known. */
static int s3_put(struct s3_store *st, const char *rel, const void *body, size_t len,
                  const char *sha256_hex)
{
        struct cairn_fetch_response resp;
        struct s3_req rq;
        int r = s3_req_init(&rq, st, "PUT", rel, "", sha256_hex);
        if (r < 0)
                return r;
        rq.fr.body = body;
        rq.fr.body_len = len;
        rq.fr.deadline_ns = transfer_deadline(st, len);
        r = s3_do(st, &rq, &resp);
        s3_req_release(&rq);
        return r;
}

static int s3_write_ref(struct cairn_store *s, const char *name, const char *tag,
                        const struct cairn_digest *digest)
{
        struct s3_store *st = to_s3(s);
        char text[CAIRN_DIGEST_STR_SIZE + 1], hex[CAIRN_DIGEST_HEX_LEN + 1], *rel = NULL;
        struct cairn_digest body_digest;
        int r;

        cairn_digest_to_string(digest, text);
        strcat(text, "\n");
        cairn_sha256(text, strlen(text), &body_digest);
        cairn_digest_to_hex(&body_digest, hex);
        if (asprintf(&rel, "refs/%s/%s", name, tag) < 0)
                return -ENOMEM;
        r = s3_put(st, rel, text, strlen(text), hex);
        free(rel);
        return r;
}

static int s3_head(struct s3_store *st, const char *rel, uint64_t *ret_size)
{
        struct cairn_fetch_response resp;
        struct s3_req rq;
        int r = s3_req_init(&rq, st, "HEAD", rel, "", "UNSIGNED-PAYLOAD");
        if (r < 0)
                return r;
        r = s3_do(st, &rq, &resp);
        if (r >= 0) {
                if (resp.content_length == UINT64_MAX)
                        r = -EIO; /* a HEAD without a length tells us nothing */
                else
                        *ret_size = resp.content_length;
        }
        s3_req_release(&rq);
        return r;
}

static int s3_blob_size(struct cairn_store *s, const struct cairn_digest *d, uint64_t *ret_size)
{
        char rel[96];
        blob_rel(d, rel);
        return s3_head(to_s3(s), rel, ret_size);
}

static int s3_read_blob(struct cairn_store *s, const struct cairn_digest *d, uint64_t offset,
                        const struct iovec *iov, unsigned iovcnt, size_t len,
                        uint64_t deadline_ns)
{
        struct s3_store *st = to_s3(s);
        struct cairn_fetch_response resp;
        struct s3_req rq;
        char rel[96];
        int r;

        if (len == 0)
                return 0;
        blob_rel(d, rel);
        r = s3_req_init(&rq, st, "GET", rel, "", "UNSIGNED-PAYLOAD");
        if (r < 0)
                return r;
        rq.fr.range_offset = offset;
        rq.fr.range_len = len;
        rq.fr.out_iov = iov;
        rq.fr.out_iovcnt = iovcnt;
        rq.fr.deadline_ns = deadline_ns;
        r = s3_do(st, &rq, &resp);
        /* The engine checks the range; a short body past it is still a short blob. */
        if (r >= 0 && resp.body_len != len)
                r = -EIO;
        s3_req_release(&rq);
        return r;
}

static int s3_copy_blob_to_fd(struct cairn_store *s, const struct cairn_digest *d, int fd,
                              uint64_t max_size, uint64_t *ret_size)
{
        struct s3_store *st = to_s3(s);
        struct cairn_fetch_response resp;
        struct s3_req rq;
        char rel[96];
        int r;

        blob_rel(d, rel);
        r = s3_req_init(&rq, st, "GET", rel, "", "UNSIGNED-PAYLOAD");
        if (r < 0)
                return r;
        rq.fr.out_fd = fd;
        rq.fr.out_fd_cap = max_size;
        rq.fr.deadline_ns = transfer_deadline(st, max_size);
        r = s3_do(st, &rq, &resp);
        if (r >= 0)
                *ret_size = resp.body_len;
        s3_req_release(&rq);
        return r;
}

static int s3_delete(struct s3_store *st, const char *rel, const char *query)
{
        struct cairn_fetch_response resp;
        struct s3_req rq;
        int r = s3_req_init(&rq, st, "DELETE", rel, query, "UNSIGNED-PAYLOAD");
        if (r < 0)
                return r;
        r = s3_do(st, &rq, &resp);
        s3_req_release(&rq);
        return r;
}

static int s3_remove_blob(struct cairn_store *s, const struct cairn_digest *d)
{
        struct s3_store *st = to_s3(s);
        char rel[96];
        uint64_t size;
        /* S3 deletes are idempotent and say nothing about absence: ask first. */
        blob_rel(d, rel);
        int r = s3_head(st, rel, &size);
        if (r < 0)
                return r;
        return s3_delete(st, rel, "");
}

/* ---------------------------------------------------------------- writing */

struct s3_blob_writer {
        struct cairn_blob_writer base;
        struct s3_store *store;
        int fd;
        uint64_t written;
};

/* An unnamed file under $TMPDIR: it vanishes with its last descriptor, whatever happens. */
static int tmpfile_open(void)
{
        const char *dir = getenv("TMPDIR");
        if (!dir || !*dir)
                dir = "/tmp";
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
                return fd;
        if (errno != EOPNOTSUPP && errno != EISDIR && errno != ENOENT)
                return -errno;
        /* Filesystems without O_TMPFILE: a named file, unlinked at once. */
        char *path;
        if (asprintf(&path, "%s/cairn-s3-XXXXXX", dir) < 0)
                return -ENOMEM;
        fd = mkostemp(path, O_CLOEXEC);
        int r = fd < 0 ? -errno : 0;
        if (fd >= 0)
                unlink(path);
        free(path);
        return fd >= 0 ? fd : r;
}

static int s3_writer_write(struct cairn_blob_writer *base, const void *data, size_t len)
{
        struct s3_blob_writer *w = (struct s3_blob_writer *)base;
        int r = cairn_write_all(w->fd, data, len);
        if (r < 0)
                return r;
        w->written += len;
        return 0;
}

/* One part of a multipart upload, in flight or done. */
struct s3_part {
        struct s3_upload *up;
        unsigned number;
        char query[S3_UPLOAD_ID_MAX * 3 + 64];
        char sha256[CAIRN_DIGEST_HEX_LEN + 1];
        struct s3_req rq;
        struct cairn_fetch_response resp;
        int result;
        char etag[sizeof(((struct cairn_fetch_response *)0)->etag)];
};

struct s3_upload {
        struct s3_store *store;
        const char *rel;
        char *upload_id_enc;     /* URI-encoded for the query string */
        const uint8_t *data;     /* the mapped temporary file */
        uint64_t size;
        uint64_t part_size;
        unsigned nparts;
        struct s3_part *parts;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned in_flight;      /* protected by lock */
        int error;               /* first failure; protected by lock */
};

static void part_done(void *ctx, int result, const struct cairn_fetch_response *response)
{
        struct s3_part *p = ctx;
        struct s3_upload *up = p->up;

        result = s3_result(result, response);
        if (result >= 0 && !response->etag[0])
                result = -EIO; /* without its ETag the part cannot be named at completion */
        if (result < 0)
                s3_log_failure(up->store, &p->rq, result, response);
        pthread_mutex_lock(&up->lock);
        p->result = result;
        snprintf(p->etag, sizeof(p->etag), "%s", response->etag);
        if (result < 0 && up->error == 0)
                up->error = result;
        up->in_flight--;
        pthread_cond_signal(&up->cond);
        pthread_mutex_unlock(&up->lock);
}

static int part_submit(struct s3_upload *up, unsigned i)
{
        struct s3_part *p = &up->parts[i];
        uint64_t off = (uint64_t)i * up->part_size;
        uint64_t len = up->size - off < up->part_size ? up->size - off : up->part_size;
        struct cairn_digest d;
        int r;

        p->up = up;
        p->number = i + 1;
        snprintf(p->query, sizeof(p->query), "partNumber=%u&uploadId=%s", p->number,
                 up->upload_id_enc);
        cairn_sha256(up->data + off, (size_t)len, &d);
        cairn_digest_to_hex(&d, p->sha256);
        r = s3_req_init(&p->rq, up->store, "PUT", up->rel, p->query, p->sha256);
        if (r < 0)
                return r;
        p->rq.fr.body = up->data + off;
        p->rq.fr.body_len = (size_t)len;
        p->rq.fr.deadline_ns = transfer_deadline(up->store, len);
        pthread_mutex_lock(&up->lock);
        up->in_flight++;
        pthread_mutex_unlock(&up->lock);
        r = cairn_fetch_submit(up->store->fetch, &p->rq.fr, part_done, p);
        if (r < 0) {
                pthread_mutex_lock(&up->lock);
                up->in_flight--;
                pthread_mutex_unlock(&up->lock);
        }
        return r;
}

/* A growable string for the CompleteMultipartUpload body. */
struct strbuf {
        char *data;
        size_t len, cap;
        int error;
};

static void strbuf_add(struct strbuf *b, const char *s, size_t n)
{
        if (b->error)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *p = realloc(b->data, cap);
                if (!p) {
                        b->error = -ENOMEM;
                        return;
                }
                b->data = p;
                b->cap = cap;
        }
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = '\0';
}

static void strbuf_puts(struct strbuf *b, const char *s)
{
        strbuf_add(b, s, strlen(s));
}

/* Text content with the characters XML reserves escaped. */
static void strbuf_put_xml_text(struct strbuf *b, const char *s)
{
        for (; *s; s++) {
                switch (*s) {
                case '&':
                        strbuf_puts(b, "&amp;");
                        break;
                case '<':
                        strbuf_puts(b, "&lt;");
                        break;
                case '>':
                        strbuf_puts(b, "&gt;");
                        break;
                default:
                        strbuf_add(b, s, 1);
                }
        }
}

/*
 * POST with a small body and a small XML response (create and complete);
 * the S3 error code, if any, goes to code (64 bytes).
 */
static int s3_post_xml(struct s3_store *st, const char *rel, const char *query, const char *body,
                       size_t body_len, char *out, size_t out_cap, size_t *ret_len, char *code)
{
        struct cairn_fetch_response resp;
        struct cairn_digest d;
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        struct s3_req rq;
        int r;

        cairn_sha256(body, body_len, &d);
        cairn_digest_to_hex(&d, hex);
        r = s3_req_init(&rq, st, "POST", rel, query, hex);
        if (r < 0)
                return r;
        rq.fr.body = body;
        rq.fr.body_len = body_len;
        rq.fr.out = out;
        rq.fr.out_cap = out_cap;
        /* Completing a large upload makes the server assemble it: give it time. */
        rq.fr.deadline_ns = transfer_deadline(st, 0) + 120ull * 1000000000ull;
        r = s3_do(st, &rq, &resp);
        if (r >= 0)
                *ret_len = (size_t)resp.body_len;
        snprintf(code, 64, "%s", resp.error_code);
        s3_req_release(&rq);
        return r;
}

static int multipart_upload(struct s3_store *st, const char *rel, const uint8_t *data,
                            uint64_t size)
{
        struct s3_upload up = {.store = st, .rel = rel, .data = data, .size = size};
        struct strbuf body = {0};
        char *xml = NULL, upload_id[S3_UPLOAD_ID_MAX + 1], query[S3_UPLOAD_ID_MAX * 3 + 16];
        char code[64] = "", message[256];
        size_t xml_len = 0;
        bool created = false;
        unsigned next = 0;
        int r;

        up.part_size = st->part_size;
        /* Keep within S3's part count: grow the parts (in MiB steps) for huge blobs. */
        if ((size + up.part_size - 1) / up.part_size > S3_MAX_PARTS)
                up.part_size = ((size + S3_MAX_PARTS - 1) / S3_MAX_PARTS + MiB - 1) / MiB * MiB;
        if (up.part_size > S3_PART_SIZE_MAX)
                return -EFBIG;
        up.nparts = (unsigned)((size + up.part_size - 1) / up.part_size);
        pthread_mutex_init(&up.lock, NULL);
        pthread_cond_init(&up.cond, NULL);

        xml = malloc(S3_XML_RESPONSE_MAX);
        up.parts = calloc(up.nparts, sizeof(*up.parts));
        if (!xml || !up.parts) {
                r = -ENOMEM;
                goto out;
        }
        r = s3_post_xml(st, rel, "uploads=", "", 0, xml, S3_XML_RESPONSE_MAX, &xml_len, code);
        if (r < 0)
                goto out;
        r = cairn_s3_parse_upload_id(xml, xml_len, upload_id, sizeof(upload_id));
        if (r < 0) {
                cairn_debug("s3: no upload id in the CreateMultipartUpload response for '%s'",
                            rel);
                r = -EIO;
                goto out;
        }
        created = true;
        r = cairn_sigv4_uri_encode(upload_id, strlen(upload_id), false, &up.upload_id_enc);
        if (r < 0)
                goto out;

        /* Parts go out with at most upload_parallel in flight; the first failure stops it. */
        pthread_mutex_lock(&up.lock);
        while (next < up.nparts && up.error == 0) {
                if (up.in_flight >= st->upload_parallel) {
                        pthread_cond_wait(&up.cond, &up.lock);
                        continue;
                }
                pthread_mutex_unlock(&up.lock);
                r = part_submit(&up, next);
                pthread_mutex_lock(&up.lock);
                if (r < 0) {
                        if (up.error == 0)
                                up.error = r;
                        break;
                }
                next++;
        }
        while (up.in_flight > 0)
                pthread_cond_wait(&up.cond, &up.lock);
        r = up.error;
        pthread_mutex_unlock(&up.lock);
        if (r < 0)
                goto out;

        strbuf_puts(&body, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/"
                           "2006-03-01/\">");
        for (unsigned i = 0; i < up.nparts; i++) {
                char num[32];
                snprintf(num, sizeof(num), "%u", up.parts[i].number);
                strbuf_puts(&body, "<Part><PartNumber>");
                strbuf_puts(&body, num);
                strbuf_puts(&body, "</PartNumber><ETag>");
                strbuf_put_xml_text(&body, up.parts[i].etag);
                strbuf_puts(&body, "</ETag></Part>");
        }
        strbuf_puts(&body, "</CompleteMultipartUpload>");
        if (body.error) {
                r = body.error;
                goto out;
        }
        snprintf(query, sizeof(query), "uploadId=%s", up.upload_id_enc);
        r = s3_post_xml(st, rel, query, body.data, body.len, xml, S3_XML_RESPONSE_MAX, &xml_len,
                        code);
        if (r < 0 && strcmp(code, "NoSuchUpload") == 0) {
                /*
                 * An earlier attempt completed the upload and its answer was
                 * lost: the retry finds no upload.  The object tells.
                 */
                uint64_t existing;
                if (s3_head(st, rel, &existing) >= 0 && existing == size) {
                        created = false;
                        r = 0;
                        goto out;
                }
        }
        if (r < 0)
                goto out;
        /* S3 may answer 200 and still fail the completion: the error is in the body. */
        if (cairn_s3_parse_error(xml, xml_len, code, sizeof(code), message, sizeof(message)) ==
            0) {
                scrub(st, message, sizeof(message));
                cairn_debug("s3: completing the upload of '%s' failed: %s: %s", rel, code,
                            message);
                r = is_auth_code(code) ? -EACCES : -EIO;
                goto out;
        }
        created = false; /* completed: nothing to abort */
        cairn_debug("s3: uploaded '%s' (%" PRIu64 " bytes) in %u parts of %" PRIu64 " bytes", rel,
                    size, up.nparts, up.part_size);
        r = 0;
out:
        if (created) {
                /* Best effort: parts of an abandoned upload would stay billed. */
                snprintf(query, sizeof(query), "uploadId=%s", up.upload_id_enc);
                if (s3_delete(st, rel, query) < 0)
                        cairn_debug("s3: aborting the multipart upload of '%s' failed", rel);
        }
        if (up.parts)
                for (unsigned i = 0; i < up.nparts; i++)
                        s3_req_release(&up.parts[i].rq);
        free(up.parts);
        free(up.upload_id_enc);
        free(body.data);
        free(xml);
        pthread_cond_destroy(&up.cond);
        pthread_mutex_destroy(&up.lock);
        return r;
}

static int s3_writer_commit(struct cairn_blob_writer *base, const struct cairn_digest *digest,
                            bool *ret_created)
{
        struct s3_blob_writer *w = (struct s3_blob_writer *)base;
        struct s3_store *st = w->store;
        char rel[96], hex[CAIRN_DIGEST_HEX_LEN + 1];
        uint64_t size = w->written, existing;
        void *map = NULL;
        int r;

        blob_rel(digest, rel);
        /* Content-addressed: an object of this name and size is this blob. */
        r = s3_head(st, rel, &existing);
        if (r >= 0 && existing == size) {
                *ret_created = false;
                return 0;
        }
        if (r < 0 && r != -ENOENT)
                return r;
        if (size > 0) {
                if (size > SIZE_MAX)
                        return -EFBIG;
                map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, w->fd, 0);
                if (map == MAP_FAILED)
                        return -errno;
        }
        if (size < S3_MULTIPART_THRESHOLD) {
                /* The blob's digest is the SHA-256 of the body: the server checks it. */
                cairn_digest_to_hex(digest, hex);
                r = s3_put(st, rel, map, (size_t)size, size ? hex : EMPTY_SHA256);
        } else {
                r = multipart_upload(st, rel, map, size);
                if (r >= 0) {
                        /* Each part was checked on its own; check that the whole is there. */
                        r = s3_head(st, rel, &existing);
                        if (r >= 0 && existing != size) {
                                cairn_debug("s3: '%s' is %" PRIu64 " bytes after upload, not "
                                            "%" PRIu64,
                                            rel, existing, size);
                                r = -EIO;
                        }
                }
        }
        if (map)
                munmap(map, (size_t)size);
        if (r < 0)
                return r;
        *ret_created = true;
        return 0;
}

static void s3_writer_free(struct cairn_blob_writer *base)
{
        struct s3_blob_writer *w = (struct s3_blob_writer *)base;
        if (w->fd >= 0)
                close(w->fd);
        free(w);
}

static const struct cairn_blob_writer_ops s3_writer_ops = {
        .write = s3_writer_write,
        .commit = s3_writer_commit,
        .free = s3_writer_free,
};

static int s3_blob_writer_new(struct cairn_store *s, struct cairn_blob_writer **ret_writer)
{
        struct s3_blob_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->base.ops = &s3_writer_ops;
        w->store = to_s3(s);
        w->fd = tmpfile_open();
        if (w->fd < 0) {
                int r = w->fd;
                free(w);
                return r;
        }
        *ret_writer = &w->base;
        return 0;
}

/* ---------------------------------------------------------------- opening */

static void s3_free(struct cairn_store *s)
{
        struct s3_store *st = to_s3(s);
        if (st->own_fetch)
                cairn_fetch_free(st->fetch);
        cairn_s3_config_release(&st->cfg);
        if (st->token_header) {
                OPENSSL_cleanse(st->token_header, strlen(st->token_header));
                free(st->token_header);
        }
        free(st->bucket);
        free(st->prefix);
        free(st->origin);
        free(st->host);
        free(st->path_base);
        free(st);
}

static const struct cairn_store_ops s3_ops = {
        .read_ref = s3_read_ref,
        .write_ref = s3_write_ref,
        .blob_size = s3_blob_size,
        .read_blob = s3_read_blob,
        .copy_blob_to_fd = s3_copy_blob_to_fd,
        .remove_blob = s3_remove_blob,
        .blob_writer_new = s3_blob_writer_new,
        .free = s3_free,
};

/* Bucket names as S3-compatible servers accept them (AWS is stricter; it will say so). */
static bool bucket_valid(const char *b)
{
        size_t n = strlen(b);
        if (n < 1 || n > 255)
                return false;
        for (; *b; b++)
                if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
                      (*b >= '0' && *b <= '9') || *b == '.' || *b == '-' || *b == '_'))
                        return false;
        return true;
}

/* Usable as a host name label sequence, the condition for virtual-hosted addressing. */
static bool bucket_dns_compatible(const char *b, bool https)
{
        size_t n = strlen(b);
        if (n < 3 || n > 63)
                return false;
        /* With TLS a dot breaks the wildcard certificate match (*.s3.amazonaws.com). */
        if (https && strchr(b, '.'))
                return false;
        char prev = '.';
        for (; *b; prev = *b, b++) {
                bool alnum = (*b >= 'a' && *b <= 'z') || (*b >= '0' && *b <= '9');
                if (!alnum && *b != '-' && *b != '.')
                        return false;
                if ((*b == '.' || *b == '-') && prev == '.')
                        return false;
                if (*b == '.' && prev == '-')
                        return false;
        }
        return prev != '.' && prev != '-';
}

/*
 * PREFIX from the URL into "a/b/" form: components may not be empty, "."
 * or "..", nor hold control characters (some servers normalize such keys,
 * which would make our names differ from theirs).
 */
static int prefix_normalize(const char *p, char **ret)
{
        size_t len = strlen(p);
        while (len && p[len - 1] == '/')
                len--;
        if (len == 0)
                return (*ret = strdup("")) ? 0 : -ENOMEM;
        if (len > 512)
                return -EINVAL;
        const char *comp = p, *end = p + len;
        while (comp <= end) {
                const char *slash = memchr(comp, '/', (size_t)(end - comp));
                const char *ce = slash ? slash : end;
                size_t cl = (size_t)(ce - comp);
                if (cl == 0 || (cl == 1 && comp[0] == '.') ||
                    (cl == 2 && comp[0] == '.' && comp[1] == '.'))
                        return -EINVAL;
                for (const char *c = comp; c < ce; c++)
                        if ((unsigned char)*c < 0x20 || *c == 0x7f)
                                return -EINVAL;
                comp = ce + 1;
        }
        char *out;
        if (asprintf(&out, "%.*s/", (int)len, p) < 0)
                return -ENOMEM;
        *ret = out;
        return 0;
}

/* A size from the environment, with an optional K/M/G (binary) suffix. */
static int env_size(const char *name, uint64_t min, uint64_t max, uint64_t *ret)
{
        const char *v = getenv(name);
        char *end;
        if (!v || !*v)
                return 0;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        if (errno || end == v || v[0] == '-')
                return -EINVAL;
        unsigned shift = 0;
        if (*end == 'K' || *end == 'k')
                shift = 10;
        else if (*end == 'M' || *end == 'm')
                shift = 20;
        else if (*end == 'G' || *end == 'g')
                shift = 30;
        if (shift) {
                end++;
                if (*end == 'i' && end[1] == 'B')
                        end += 2;
        }
        if (*end || n > (UINT64_MAX >> shift))
                return -EINVAL;
        n <<= shift;
        if (n < min || n > max)
                return -ERANGE;
        *ret = n;
        return 0;
}

/*
 * A cheap request at open so that the usual mistakes (wrong secret, no such
 * bucket, nothing listening) are reported here, with a reason, instead of
 * as a bare errno from the first read: a GET of a key that no ref can have
 * (ref names never start with '.').  Answers that only mean "no permission
 * to list" are fine: a reader may well be allowed GetObject only.
 */
static int s3_probe(struct s3_store *st, char *errbuf, size_t errlen)
{
        struct cairn_fetch_response resp;
        struct s3_req rq;
        char buf[1];
        int r = s3_req_init(&rq, st, "GET", "refs/.cairn-probe", "", "UNSIGNED-PAYLOAD");
        if (r < 0)
                return r;
        rq.fr.out = buf;
        rq.fr.out_cap = sizeof(buf);
        r = s3_do(st, &rq, &resp);
        s3_req_release(&rq);

        char msg[sizeof(resp.error_message)];
        snprintf(msg, sizeof(msg), "%s", resp.error_message);
        scrub(st, msg, sizeof(msg));
        if (r >= 0 || r == -EFBIG)
                return 0;
        if (r == -ENOENT && strcmp(resp.error_code, "NoSuchBucket") == 0) {
                set_err(errbuf, errlen, "bucket '%s' does not exist at '%s'", st->bucket,
                        st->cfg.endpoint);
                return -ENOENT;
        }
        if (r == -ENOENT)
                return 0;
        if (r == -EACCES && resp.error_code[0] && is_auth_code(resp.error_code)) {
                set_err(errbuf, errlen, "authentication failed: %s%s%s", resp.error_code,
                        msg[0] ? ": " : "", msg);
                return -EACCES;
        }
        if (r == -EACCES && resp.status == 401) {
                set_err(errbuf, errlen, "authentication failed: HTTP 401%s%s",
                        resp.error_code[0] ? " " : "", resp.error_code);
                return -EACCES;
        }
        if (r == -EACCES)
                return 0; /* AccessDenied: perhaps no ListBucket right; reads will tell */
        set_err(errbuf, errlen, "cannot reach bucket '%s' at '%s': %s%s%s%s%s%s", st->bucket,
                st->cfg.endpoint, strerror(-r), resp.error_code[0] || msg[0] ? " (" : "",
                resp.error_code, resp.error_code[0] && msg[0] ? ": " : "", msg,
                resp.error_code[0] || msg[0] ? ")" : "");
        return r;
}

int cairn_store_s3_open(const char *url, const struct cairn_store_options *opts,
                        struct cairn_store **ret_store, char *errbuf, size_t errlen)
{
        static const struct cairn_store_options defaults;
        struct s3_store *st = NULL;
        int r;

        if (!opts)
                opts = &defaults;
        if (strncmp(url, "s3://", 5) != 0)
                return -EINVAL;
        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->base.ops = &s3_ops;
        st->base.remote = true;

        /* s3://BUCKET[/PREFIX] */
        const char *b = url + 5, *slash = strchr(b, '/');
        st->bucket = slash ? strndup(b, (size_t)(slash - b)) : strdup(b);
        if (!st->bucket) {
                r = -ENOMEM;
                goto fail;
        }
        if (!bucket_valid(st->bucket)) {
                set_err(errbuf, errlen, "invalid store URL '%s': bad bucket name", url);
                r = -EINVAL;
                goto fail;
        }
        r = prefix_normalize(slash ? slash + 1 : "", &st->prefix);
        if (r < 0) {
                if (r == -EINVAL)
                        set_err(errbuf, errlen,
                                "invalid store URL '%s': the prefix has an empty, '.' or '..' "
                                "component or a control character",
                                url);
                goto fail;
        }

        r = cairn_s3_config_load(opts, &st->cfg, errbuf, errlen);
        if (r < 0)
                goto fail;
        st->sign = st->cfg.access_key != NULL && !opts->anonymous;

        r = env_size("CAIRN_S3_PART_SIZE", S3_PART_SIZE_MIN, S3_PART_SIZE_MAX, &st->part_size);
        if (r < 0) {
                set_err(errbuf, errlen, "invalid CAIRN_S3_PART_SIZE: need 5MiB to 5GiB");
                goto fail;
        }
        uint64_t parallel = 0;
        r = env_size("CAIRN_S3_UPLOAD_PARALLEL", 1, S3_UPLOAD_PARALLEL_MAX, &parallel);
        if (r < 0) {
                set_err(errbuf, errlen, "invalid CAIRN_S3_UPLOAD_PARALLEL: need 1 to %u",
                        S3_UPLOAD_PARALLEL_MAX);
                goto fail;
        }
        if (!st->part_size)
                st->part_size = S3_PART_SIZE_DEFAULT;
        st->upload_parallel = parallel ? (unsigned)parallel : S3_UPLOAD_PARALLEL_DEFAULT;

        /* Addressing: path style unless virtual-hosted is chosen and the bucket allows it. */
        const char *ep = st->cfg.endpoint;
        bool https = strncmp(ep, "https://", 8) == 0;
        const char *hostport = ep + (https ? 8 : 7);
        bool path_style = st->cfg.path_style;
        if (!path_style && !bucket_dns_compatible(st->bucket, https)) {
                if (opts->addressing == CAIRN_S3_ADDRESSING_VIRTUAL) {
                        set_err(errbuf, errlen,
                                "bucket '%s' cannot be addressed virtual-hosted style "
                                "(not a DNS name%s)",
                                st->bucket, https ? " without dots" : "");
                        r = -EINVAL;
                        goto fail;
                }
                path_style = true;
        }
        if (path_style) {
                r = asprintf(&st->origin, "%s", ep);
                if (r >= 0)
                        r = asprintf(&st->host, "%s", hostport);
                if (r >= 0)
                        r = asprintf(&st->path_base, "/%s", st->bucket);
        } else {
                r = asprintf(&st->origin, "%s://%s.%s", https ? "https" : "http", st->bucket,
                             hostport);
                if (r >= 0)
                        r = asprintf(&st->host, "%s.%s", st->bucket, hostport);
                if (r >= 0)
                        r = (st->path_base = strdup("")) ? 0 : -1;
        }
        if (r < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (st->sign && st->cfg.session_token) {
                if (asprintf(&st->token_header, "x-amz-security-token: %s",
                             st->cfg.session_token) < 0) {
                        st->token_header = NULL;
                        r = -ENOMEM;
                        goto fail;
                }
        }

        /* The engine: the caller's, or our own configured from the options. */
        if (opts->fetch) {
                st->fetch = opts->fetch;
        } else {
                struct cairn_fetch_options fo;
                cairn_fetch_options_default(&fo);
                if (opts->max_connections)
                        fo.max_connections = opts->max_connections;
                if (opts->deadline_ms)
                        fo.deadline_ms = opts->deadline_ms;
                if (opts->ca_file)
                        fo.ca_file = opts->ca_file;
                if (opts->insecure)
                        fo.insecure = true;
                r = cairn_fetch_new(&fo, &st->fetch);
                if (r < 0) {
                        set_err(errbuf, errlen, "cannot start the fetch engine: %s",
                                strerror(-r));
                        goto fail;
                }
                st->own_fetch = true;
        }
        st->deadline_ms = opts->deadline_ms ? opts->deadline_ms : 30000;

        r = s3_probe(st, errbuf, errlen);
        if (r < 0)
                goto fail;
        cairn_debug("s3: bucket '%s' prefix '%s' at %s (%s style, %s, region %s)", st->bucket,
                    st->prefix, st->origin, path_style ? "path" : "virtual-hosted",
                    st->sign ? "signed" : "anonymous", st->cfg.region);
        *ret_store = &st->base;
        return 0;
fail:
        s3_free(&st->base);
        return r;
}
