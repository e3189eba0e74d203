/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AWS Signature Version 4 with OpenSSL: canonical request, string to sign,
 * signing-key derivation and the Authorization header or presigned query.
 *
 * The rules follow the AWS SigV4 test suite byte for byte: header names
 * lowercased and sorted, duplicate headers joined with ',' in the order
 * given, values trimmed with inner whitespace (line folds included) folded
 * to one space; query parameters sorted by name then value; the path
 * optionally normalized (RFC 3986 dot segments, empty segments dropped),
 * which S3 must not do since "a//b" and "a/./b" are distinct keys there.
 *
 * Paths and query strings are canonicalized by decoding valid %XX escapes
 * and re-encoding every byte outside the unreserved set, because that is
 * what the server does with the bytes it receives: "a%20b", "a b" and
 * "a%2f" all reach the same canonical form the server computes, and an
 * already canonical path is left unchanged.
 *
 * Every scratch buffer that can hold the secret, a derived key or the
 * session token is wiped with OPENSSL_cleanse before it is freed.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cairn/sigv4.h"

#define SIGV4_ALGORITHM   "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR  "aws4_request"
#define SIGV4_HASH_SIZE   32
#define SIGV4_EXPIRES_MAX 604800u /* seven days: the longest a presigned URL may live */

/*
 * A growable string whose out-of-memory state is sticky, so that long
 * chains of appends are checked once.  Growth copies and wipes instead of
 * realloc() so that no stale copy of a secret is left on the heap.
 */
struct sbuf {
        char *data;
        size_t len;
        size_t cap;
        bool oom;
};

static void sbuf_wipe(struct sbuf *b)
{
        if (b->data) {
                OPENSSL_cleanse(b->data, b->cap);
                free(b->data);
        }
        *b = (struct sbuf){0};
}

static bool sbuf_reserve(struct sbuf *b, size_t extra)
{
        if (b->oom)
                return false;
        if (extra < b->cap - b->len)
                return true;
        if (extra > SIZE_MAX / 2 - b->len - 1) {
                b->oom = true;
                return false;
        }
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len <= extra)
                cap *= 2;
        char *data = malloc(cap);
        if (!data) {
                b->oom = true;
                return false;
        }
        if (b->data) {
                memcpy(data, b->data, b->len);
                OPENSSL_cleanse(b->data, b->cap);
                free(b->data);
        }
        b->data = data;
        b->cap = cap;
        b->data[b->len] = '\0';
        return true;
}

static void sbuf_putn(struct sbuf *b, const char *s, size_t n)
{
        if (!sbuf_reserve(b, n))
                return;
        if (n)
                memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = '\0';
}

static void sbuf_puts(struct sbuf *b, const char *s)
{
        sbuf_putn(b, s, strlen(s));
}

static void sbuf_putc(struct sbuf *b, char c)
{
        sbuf_putn(b, &c, 1);
}

/* Hands the string over (never NULL on success, "" when empty); wipes it on failure. */
static int sbuf_steal(struct sbuf *b, char **ret)
{
        if (!sbuf_reserve(b, 0)) {
                sbuf_wipe(b);
                return -ENOMEM;
        }
        *ret = b->data;
        *b = (struct sbuf){0};
        return 0;
}

static void free_secret_string(char *s)
{
        if (!s)
                return;
        OPENSSL_cleanse(s, strlen(s));
        free(s);
}

static bool is_unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.' || c == '~';
}

static int hex_value(unsigned char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static void sbuf_put_encoded_byte(struct sbuf *b, unsigned char c, bool keep_slash)
{
        static const char hex[] = "0123456789ABCDEF";
        if (is_unreserved(c) || (keep_slash && c == '/')) {
                sbuf_putc(b, (char)c);
        } else {
                char esc[3] = {'%', hex[c >> 4], hex[c & 0xf]};
                sbuf_putn(b, esc, sizeof(esc));
        }
}

static void sbuf_put_encoded(struct sbuf *b, const char *s, size_t len, bool keep_slash)
{
        for (size_t i = 0; i < len; i++)
                sbuf_put_encoded_byte(b, (unsigned char)s[i], keep_slash);
}

/*
 * Decodes valid %XX escapes and re-encodes: the canonical form of bytes
 * that may or may not have been percent-encoded by the caller.  A '%' not
 * followed by two hex digits is a literal percent sign.  '+' is a literal
 * plus (RFC 3986), never a space.  An escaped "%2F" stays escaped even
 * where '/' is kept: it is part of a key, not a path separator.
 */
static void sbuf_put_canonical(struct sbuf *b, const char *s, size_t len, bool keep_slash)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                bool escaped = false;
                if (c == '%' && i + 2 < len) {
                        int hi = hex_value((unsigned char)s[i + 1]);
                        int lo = hex_value((unsigned char)s[i + 2]);
                        if (hi >= 0 && lo >= 0) {
                                c = (unsigned char)(hi << 4 | lo);
                                escaped = true;
                                i += 2;
                        }
                }
                sbuf_put_encoded_byte(b, c, keep_slash && !escaped);
        }
}

int cairn_sigv4_uri_encode(const char *s, size_t len, bool keep_slash, char **ret)
{
        struct sbuf b = {0};
        if (!s && len)
                return -EINVAL;
        if (len > (SIZE_MAX - 1) / 3)
                return -ENOMEM;
        if (!sbuf_reserve(&b, len * 3))
                return -ENOMEM;
        sbuf_put_encoded(&b, s, len, keep_slash);
        return sbuf_steal(&b, ret);
}

/* RFC 7230 token characters: what a method or header name may consist of. */
static bool is_tchar(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if (!is_tchar((unsigned char)*s))
                        return false;
        return true;
}

/* Credential scope parts and the access key end up between '/' and ',' separators. */
static bool is_scope_part(const char *s)
{
        if (!s || !*s)
                return false;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c <= ' ' || c >= 0x7f || c == '/' || c == ',' || c == '=' || c == ';')
                        return false;
        }
        return true;
}

static bool is_header_space(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Canonical URI.  Normalization drops empty and "." segments and resolves
 * ".." (never above the root); a path ending in "/", "/." or "/.." keeps a
 * trailing slash, as in RFC 3986 remove_dot_segments.
 */
static int put_canonical_path(struct sbuf *b, const char *path, bool normalize)
{
        size_t len = strlen(path);
        if (len == 0) {
                sbuf_putc(b, '/');
                return 0;
        }
        if (!normalize) {
                sbuf_put_canonical(b, path, len, true);
                return 0;
        }

        size_t nseg = 1;
        for (size_t i = 0; i < len; i++)
                nseg += path[i] == '/';
        struct segment {
                size_t start;
                size_t len;
        } *segs = calloc(nseg, sizeof(*segs));
        if (!segs)
                return -ENOMEM;

        size_t depth = 0;
        bool trailing_slash = false;
        size_t start = 0;
        for (size_t i = 0; i <= len; i++) {
                if (i < len && path[i] != '/')
                        continue;
                size_t n = i - start;
                bool last = i == len;
                if (n == 0 || (n == 1 && path[start] == '.')) {
                        trailing_slash = last;
                } else if (n == 2 && path[start] == '.' && path[start + 1] == '.') {
                        if (depth > 0)
                                depth--;
                        trailing_slash = last;
                } else {
                        segs[depth++] = (struct segment){start, n};
                        trailing_slash = false;
                }
                start = i + 1;
        }

        for (size_t i = 0; i < depth; i++) {
                sbuf_putc(b, '/');
                sbuf_put_canonical(b, path + segs[i].start, segs[i].len, false);
        }
        if (depth == 0 || trailing_slash)
                sbuf_putc(b, '/');
        free(segs);
        return 0;
}

struct query_param {
        char *name;  /* canonical (percent-encoded) */
        char *value; /* canonical (percent-encoded) */
};

static int query_param_cmp(const void *a, const void *b)
{
        const struct query_param *x = a, *y = b;
        int r = strcmp(x->name, y->name);
        return r ? r : strcmp(x->value, y->value);
}

static int canonical_string(const char *s, size_t len, char **ret)
{
        struct sbuf b = {0};
        sbuf_put_canonical(&b, s, len, false);
        return sbuf_steal(&b, ret);
}

static int raw_string(const char *s, char **ret)
{
        char *copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        return 0;
}

struct signing_parts {
        char amz_date[17];
        char scope[128];
        char *credential;     /* "AKID/scope", percent-encoded for the query form */
        char *signed_headers; /* "host;x-amz-date" */
};

/*
 * Canonical query string: the caller's parameters plus, in query form, the
 * X-Amz-* parameters that the presigned URL will carry (all but the
 * signature itself), sorted together by name and then value.
 */
static int put_canonical_query(struct sbuf *b, const char *query,
                               const struct cairn_sigv4_params *params,
                               const struct cairn_sigv4_credentials *creds,
                               const struct signing_parts *parts)
{
        size_t cap = 6;
        for (const char *p = query; *p; p++)
                cap += *p == '&';
        cap += 1;
        struct query_param *qp = calloc(cap, sizeof(*qp));
        if (!qp)
                return -ENOMEM;
        size_t n = 0;
        int r = 0;

        for (const char *p = query; *p;) {
                const char *end = strchr(p, '&');
                size_t plen = end ? (size_t)(end - p) : strlen(p);
                if (plen > 0) {
                        const char *eq = memchr(p, '=', plen);
                        size_t nlen = eq ? (size_t)(eq - p) : plen;
                        const char *v = eq ? eq + 1 : p + plen;
                        size_t vlen = (size_t)(p + plen - v);
                        r = canonical_string(p, nlen, &qp[n].name);
                        if (r < 0)
                                goto out;
                        r = canonical_string(v, vlen, &qp[n].value);
                        n++;
                        if (r < 0)
                                goto out;
                }
                p += plen;
                if (*p == '&')
                        p++;
        }

        if (params->query_form) {
                char expires[16];
                snprintf(expires, sizeof(expires), "%u", params->expires);
                struct {
                        const char *name;
                        const char *value;
                        bool encode;
                } extra[] = {
                    {"X-Amz-Algorithm", SIGV4_ALGORITHM, false},
                    {"X-Amz-Credential", parts->credential, true},
                    {"X-Amz-Date", parts->amz_date, false},
                    {"X-Amz-Expires", expires, false},
                    {"X-Amz-SignedHeaders", parts->signed_headers, true},
                    {"X-Amz-Security-Token",
                     params->omit_session_token_from_signature ? NULL : creds->session_token, true},
                };
                for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
                        if (!extra[i].value)
                                continue;
                        r = raw_string(extra[i].name, &qp[n].name);
                        if (r < 0)
                                goto out;
                        if (extra[i].encode)
                                r = cairn_sigv4_uri_encode(extra[i].value, strlen(extra[i].value),
                                                           false, &qp[n].value);
                        else
                                r = raw_string(extra[i].value, &qp[n].value);
                        n++;
                        if (r < 0)
                                goto out;
                }
        }

        qsort(qp, n, sizeof(*qp), query_param_cmp);
        for (size_t i = 0; i < n; i++) {
                if (i)
                        sbuf_putc(b, '&');
                sbuf_puts(b, qp[i].name);
                sbuf_putc(b, '=');
                sbuf_puts(b, qp[i].value);
        }
out:
        for (size_t i = 0; i < n; i++) {
                free(qp[i].name);
                free_secret_string(qp[i].value);
        }
        free(qp);
        return r;
}

struct canon_header {
        char *name;  /* lowercased */
        char *value; /* trimmed, inner whitespace folded to one space */
        size_t order;
};

static int canon_header_cmp(const void *a, const void *b)
{
        const struct canon_header *x = a, *y = b;
        int r = strcmp(x->name, y->name);
        if (r)
                return r;
        /* Duplicates keep the order in which they were given. */
        return (x->order > y->order) - (x->order < y->order);
}

static int canon_header_set(struct canon_header *h, const char *name, const char *value,
                            size_t order)
{
        h->order = order;
        h->name = strdup(name);
        if (!h->name)
                return -ENOMEM;
        for (char *p = h->name; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');

        size_t len = strlen(value);
        h->value = malloc(len + 1);
        if (!h->value)
                return -ENOMEM;
        size_t o = 0;
        bool pending_space = false;
        for (size_t i = 0; i < len; i++) {
                if (is_header_space(value[i])) {
                        pending_space = o > 0;
                        continue;
                }
                if (pending_space)
                        h->value[o++] = ' ';
                pending_space = false;
                h->value[o++] = value[i];
        }
        h->value[o] = '\0';
        return 0;
}

static bool has_header(const struct cairn_sigv4_request *req, const char *name)
{
        for (size_t i = 0; i < req->nheaders; i++)
                if (strcasecmp(req->headers[i].name, name) == 0)
                        return true;
        return false;
}

/*
 * Builds the canonical header block and the signed-header list.  In header
 * form X-Amz-Date and (unless omitted) X-Amz-Security-Token are signed too,
 * as the caller will send them; values given by the caller win.
 */
static int put_canonical_headers(struct sbuf *block, struct sbuf *signed_list,
                                 const struct cairn_sigv4_request *req,
                                 const struct cairn_sigv4_params *params,
                                 const struct cairn_sigv4_credentials *creds, const char *amz_date)
{
        size_t cap = req->nheaders + 2;
        struct canon_header *h = calloc(cap, sizeof(*h));
        if (!h)
                return -ENOMEM;
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < req->nheaders; i++) {
                r = canon_header_set(&h[n], req->headers[i].name, req->headers[i].value, n);
                n++;
                if (r < 0)
                        goto out;
        }
        if (!params->query_form) {
                if (!has_header(req, "x-amz-date")) {
                        r = canon_header_set(&h[n], "x-amz-date", amz_date, n);
                        n++;
                        if (r < 0)
                                goto out;
                }
                if (creds->session_token && !params->omit_session_token_from_signature &&
                    !has_header(req, "x-amz-security-token")) {
                        r = canon_header_set(&h[n], "x-amz-security-token", creds->session_token,
                                             n);
                        n++;
                        if (r < 0)
                                goto out;
                }
        }

        qsort(h, n, sizeof(*h), canon_header_cmp);
        for (size_t i = 0; i < n; i++) {
                bool same = i > 0 && strcmp(h[i - 1].name, h[i].name) == 0;
                if (same) {
                        sbuf_putc(block, ',');
                } else {
                        if (i > 0) {
                                sbuf_putc(block, '\n');
                                sbuf_putc(signed_list, ';');
                        }
                        sbuf_puts(block, h[i].name);
                        sbuf_putc(block, ':');
                        sbuf_puts(signed_list, h[i].name);
                }
                sbuf_puts(block, h[i].value);
        }
        sbuf_putc(block, '\n');
out:
        for (size_t i = 0; i < n; i++) {
                free(h[i].name);
                free_secret_string(h[i].value);
        }
        free(h);
        return r;
}

static void to_hex(const unsigned char *bytes, size_t n, char *out)
{
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[bytes[i] >> 4];
                out[2 * i + 1] = hex[bytes[i] & 0xf];
        }
        out[2 * n] = '\0';
}

static int sha256_hex(const char *data, size_t len, char out[2 * SIGV4_HASH_SIZE + 1])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != SIGV4_HASH_SIZE)
                return -EIO;
        to_hex(md, SIGV4_HASH_SIZE, out);
        return 0;
}

static int hmac_sha256(const void *key, size_t keylen, const char *data,
                       unsigned char out[SIGV4_HASH_SIZE])
{
        unsigned int outlen = 0;
        if (keylen > INT_MAX)
                return -EINVAL;
        if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, strlen(data), out,
                  &outlen) ||
            outlen != SIGV4_HASH_SIZE)
                return -EIO;
        return 0;
}

/*
 * kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region), service),
 * "aws4_request"); the signature is HMAC(kSigning, string to sign).
 */
static int compute_signature(const char *secret, const char *date, const char *region,
                             const char *service, const char *string_to_sign,
                             char out[2 * SIGV4_HASH_SIZE + 1])
{
        unsigned char k1[SIGV4_HASH_SIZE], k2[SIGV4_HASH_SIZE], sig[SIGV4_HASH_SIZE];
        struct sbuf seed = {0};
        int r;

        sbuf_puts(&seed, "AWS4");
        sbuf_puts(&seed, secret);
        if (seed.oom) {
                r = -ENOMEM;
                goto out;
        }
        r = hmac_sha256(seed.data, seed.len, date, k1);
        if (r < 0)
                goto out;
        r = hmac_sha256(k1, sizeof(k1), region, k2);
        if (r < 0)
                goto out;
        r = hmac_sha256(k2, sizeof(k2), service, k1);
        if (r < 0)
                goto out;
        r = hmac_sha256(k1, sizeof(k1), SIGV4_TERMINATOR, k2);
        if (r < 0)
                goto out;
        r = hmac_sha256(k2, sizeof(k2), string_to_sign, sig);
        if (r < 0)
                goto out;
        to_hex(sig, sizeof(sig), out);
out:
        OPENSSL_cleanse(k1, sizeof(k1));
        OPENSSL_cleanse(k2, sizeof(k2));
        OPENSSL_cleanse(sig, sizeof(sig));
        sbuf_wipe(&seed);
        return r;
}

static int format_amz_date(time_t t, char out[17])
{
        struct tm tm;
        if (t < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999)
                return -EINVAL;
        if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
                return -EINVAL;
        return 0;
}

static bool payload_hash_valid(const char *s)
{
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

static int validate(const struct cairn_sigv4_request *req, const struct cairn_sigv4_params *params,
                    const struct cairn_sigv4_credentials *creds)
{
        if (!req || !params || !creds)
                return -EINVAL;
        if (!is_token(req->method) || !req->path || strpbrk(req->path, "?#") ||
            !payload_hash_valid(req->payload_hash) || (req->nheaders && !req->headers))
                return -EINVAL;
        bool host = false;
        for (size_t i = 0; i < req->nheaders; i++) {
                if (!is_token(req->headers[i].name) || !req->headers[i].value)
                        return -EINVAL;
                host = host || strcasecmp(req->headers[i].name, "host") == 0;
        }
        if (!host)
                return -EINVAL;
        if (!is_scope_part(params->region) || !is_scope_part(params->service))
                return -EINVAL;
        if (params->query_form && (params->expires == 0 || params->expires > SIGV4_EXPIRES_MAX))
                return -EINVAL;
        if (!is_scope_part(creds->access_key) || !creds->secret_key || !*creds->secret_key)
                return -EINVAL;
        return 0;
}

int cairn_sigv4_sign(const struct cairn_sigv4_request *req, const struct cairn_sigv4_params *params,
                     const struct cairn_sigv4_credentials *creds,
                     struct cairn_sigv4_result *ret_result)
{
        struct cairn_sigv4_result res = {0};
        struct signing_parts parts = {0};
        struct sbuf canon = {0}, headers = {0}, signed_list = {0}, sts = {0}, out = {0}, cred = {0};
        char hash[2 * SIGV4_HASH_SIZE + 1];
        int r, n;

        r = validate(req, params, creds);
        if (r < 0)
                return r;
        const char *query = req->query ? req->query : "";

        r = format_amz_date(params->timestamp, parts.amz_date);
        if (r < 0)
                goto out;
        n = snprintf(parts.scope, sizeof(parts.scope), "%.8s/%s/%s/" SIGV4_TERMINATOR,
                     parts.amz_date, params->region, params->service);
        if (n < 0 || (size_t)n >= sizeof(parts.scope)) {
                r = -EINVAL;
                goto out;
        }

        r = put_canonical_headers(&headers, &signed_list, req, params, creds, parts.amz_date);
        if (r < 0)
                goto out;
        if (signed_list.oom) {
                r = -ENOMEM;
                goto out;
        }
        parts.signed_headers = signed_list.data;

        sbuf_puts(&cred, creds->access_key);
        sbuf_putc(&cred, '/');
        sbuf_puts(&cred, parts.scope);
        r = sbuf_steal(&cred, &parts.credential);
        if (r < 0)
                goto out;

        sbuf_puts(&canon, req->method);
        sbuf_putc(&canon, '\n');
        r = put_canonical_path(&canon, req->path, params->normalize_path);
        if (r < 0)
                goto out;
        sbuf_putc(&canon, '\n');
        r = put_canonical_query(&canon, query, params, creds, &parts);
        if (r < 0)
                goto out;
        sbuf_putc(&canon, '\n');
        if (!headers.oom)
                sbuf_putn(&canon, headers.data, headers.len);
        sbuf_putc(&canon, '\n');
        sbuf_puts(&canon, parts.signed_headers);
        sbuf_putc(&canon, '\n');
        sbuf_puts(&canon, req->payload_hash);
        if (canon.oom || headers.oom) {
                r = -ENOMEM;
                goto out;
        }

        r = sha256_hex(canon.data, canon.len, hash);
        if (r < 0)
                goto out;
        sbuf_puts(&sts, SIGV4_ALGORITHM "\n");
        sbuf_puts(&sts, parts.amz_date);
        sbuf_putc(&sts, '\n');
        sbuf_puts(&sts, parts.scope);
        sbuf_putc(&sts, '\n');
        sbuf_puts(&sts, hash);
        if (sts.oom) {
                r = -ENOMEM;
                goto out;
        }

        char date_stamp[9];
        memcpy(date_stamp, parts.amz_date, 8);
        date_stamp[8] = '\0';
        r = compute_signature(creds->secret_key, date_stamp, params->region, params->service,
                              sts.data, res.signature);
        if (r < 0)
                goto out;

        if (params->query_form) {
                /* The suite's order, which is also what the AWS SDKs send. */
                if (*query) {
                        sbuf_puts(&out, query);
                        sbuf_putc(&out, '&');
                }
                sbuf_puts(&out, "X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=");
                sbuf_put_encoded(&out, parts.credential, strlen(parts.credential), false);
                sbuf_puts(&out, "&X-Amz-Date=");
                sbuf_puts(&out, parts.amz_date);
                sbuf_puts(&out, "&X-Amz-SignedHeaders=");
                sbuf_put_encoded(&out, parts.signed_headers, strlen(parts.signed_headers), false);
                char expires[32];
                snprintf(expires, sizeof(expires), "&X-Amz-Expires=%u", params->expires);
                sbuf_puts(&out, expires);
                if (creds->session_token) {
                        sbuf_puts(&out, "&X-Amz-Security-Token=");
                        sbuf_put_encoded(&out, creds->session_token, strlen(creds->session_token),
                                         false);
                }
                sbuf_puts(&out, "&X-Amz-Signature=");
                sbuf_puts(&out, res.signature);
                r = sbuf_steal(&out, &res.query);
        } else {
                sbuf_puts(&out, SIGV4_ALGORITHM " Credential=");
                sbuf_puts(&out, parts.credential);
                sbuf_puts(&out, ", SignedHeaders=");
                sbuf_puts(&out, parts.signed_headers);
                sbuf_puts(&out, ", Signature=");
                sbuf_puts(&out, res.signature);
                r = sbuf_steal(&out, &res.authorization);
        }
        if (r < 0)
                goto out;

        r = sbuf_steal(&canon, &res.canonical_request);
        if (r < 0)
                goto out;
        r = sbuf_steal(&sts, &res.string_to_sign);
        if (r < 0)
                goto out;
        memcpy(res.amz_date, parts.amz_date, sizeof(res.amz_date));

        *ret_result = res;
        res = (struct cairn_sigv4_result){0};
out:
        cairn_sigv4_result_release(&res);
        free(parts.credential);
        sbuf_wipe(&canon);
        sbuf_wipe(&headers);
        sbuf_wipe(&signed_list);
        sbuf_wipe(&sts);
        sbuf_wipe(&out);
        OPENSSL_cleanse(hash, sizeof(hash));
        return r;
}

void cairn_sigv4_result_release(struct cairn_sigv4_result *result)
{
        if (!result)
                return;
        /* The canonical request and a presigned query carry the session token. */
        free_secret_string(result->canonical_request);
        free_secret_string(result->string_to_sign);
        free_secret_string(result->authorization);
        free_secret_string(result->query);
        *result = (struct cairn_sigv4_result){0};
}
