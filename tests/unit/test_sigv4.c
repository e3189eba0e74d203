/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SigV4 signing against the AWS Signature Version 4 test suite
 * ($CAIRN_SHARED_TESTDATA/sigv4/<case>/): every case is signed in header
 * form and in query (presigned) form and compared byte for byte with the
 * suite's canonical request, string to sign, signature and signed request.
 * The suite is not optional: a missing directory is a failure, because a
 * signer that silently goes untested is how S3 requests start to fail with
 * SignatureDoesNotMatch.
 *
 * On top of the suite: the signatures published in the S3 documentation
 * (service "s3", unnormalized paths, real payload hashes), the encoder on
 * S3 keys with spaces, '+', '%', ':', '~', '//' and UTF-8, and the inputs
 * the signer must refuse.
 */
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "cairn/sigv4.h"

#define SUITE_MIN_CASES 38 /* the suite as checked in; a shrinking suite is a failure */
#define FILE_MAX        (1 << 20)

static char *xstrndup(const char *s, size_t n)
{
        char *p = strndup(s, n);
        assert_non_null(p);
        return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        return s;
}

/* Whole file, NUL-terminated; *ret_len excludes the NUL. */
static char *read_file(const char *dir, const char *name, size_t *ret_len)
{
        char *path = xasprintf("%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        if (!f)
                fail_msg("cannot open '%s': %s", path, strerror(errno));
        char *buf = malloc(FILE_MAX + 1);
        assert_non_null(buf);
        size_t n = fread(buf, 1, FILE_MAX + 1, f);
        assert_false(ferror(f));
        fclose(f);
        if (n > FILE_MAX)
                fail_msg("'%s' is larger than %d bytes", path, FILE_MAX);
        buf[n] = '\0';
        free(path);
        if (ret_len)
                *ret_len = n;
        return buf;
}

/*
 * A tiny JSON field extractor, enough for context.json: finds "key": value
 * at any depth.  Strings are always skipped as a whole, so text inside a
 * value that looks like a key never matches.  Returns the first character
 * of the value, or NULL.
 */
static const char *json_skip_string(const char *p)
{
        for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                        p++;
        return *p ? p + 1 : NULL;
}

static const char *json_skip_ws(const char *p)
{
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                p++;
        return p;
}

static const char *json_find(const char *doc, const char *key)
{
        size_t klen = strlen(key);
        for (const char *p = doc; *p;) {
                if (*p != '"') {
                        p++;
                        continue;
                }
                const char *end = json_skip_string(p);
                if (!end)
                        return NULL;
                const char *after = json_skip_ws(end);
                if (*after == ':' && (size_t)(end - p - 2) == klen && memcmp(p + 1, key, klen) == 0)
                        return json_skip_ws(after + 1);
                p = end;
        }
        return NULL;
}

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decodes a JSON string value (escapes included, \u as UTF-8); NULL if absent or null. */
static char *json_string(const char *doc, const char *key)
{
        const char *p = json_find(doc, key);
        if (!p || strncmp(p, "null", 4) == 0)
                return NULL;
        if (*p != '"')
                fail_msg("context.json: \"%s\" is not a string", key);
        const char *end = json_skip_string(p);
        if (!end)
                fail_msg("context.json: unterminated string for \"%s\"", key);
        char *out = malloc((size_t)(end - p) * 3 + 1);
        assert_non_null(out);
        size_t o = 0;
        for (p++; p < end - 1; p++) {
                if (*p != '\\') {
                        out[o++] = *p;
                        continue;
                }
                p++;
                switch (*p) {
                case 'b':
                        out[o++] = '\b';
                        break;
                case 'f':
                        out[o++] = '\f';
                        break;
                case 'n':
                        out[o++] = '\n';
                        break;
                case 'r':
                        out[o++] = '\r';
                        break;
                case 't':
                        out[o++] = '\t';
                        break;
                case 'u': {
                        unsigned cp = 0;
                        for (int i = 1; i <= 4; i++) {
                                int d = hex_digit(p[i]);
                                if (d < 0)
                                        fail_msg("context.json: bad \\u escape in \"%s\"", key);
                                cp = cp << 4 | (unsigned)d;
                        }
                        p += 4;
                        if (cp < 0x80) {
                                out[o++] = (char)cp;
                        } else if (cp < 0x800) {
                                out[o++] = (char)(0xc0 | cp >> 6);
                                out[o++] = (char)(0x80 | (cp & 0x3f));
                        } else {
                                out[o++] = (char)(0xe0 | cp >> 12);
                                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                                out[o++] = (char)(0x80 | (cp & 0x3f));
                        }
                        break;
                }
                default:
                        out[o++] = *p;
                        break; /* \" \\ \/ */
                }
        }
        out[o] = '\0';
        return out;
}

static bool json_bool(const char *doc, const char *key, bool dflt)
{
        const char *p = json_find(doc, key);
        if (!p)
                return dflt;
        if (strncmp(p, "true", 4) == 0)
                return true;
        if (strncmp(p, "false", 5) == 0)
                return false;
        fail_msg("context.json: \"%s\" is not a boolean", key);
        return dflt;
}

static unsigned json_uint(const char *doc, const char *key)
{
        const char *p = json_find(doc, key);
        if (!p)
                fail_msg("context.json: \"%s\" is missing", key);
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || errno || v > UINT32_MAX)
                fail_msg("context.json: \"%s\" is not an unsigned integer", key);
        return (unsigned)v;
}

/* "2015-08-30T12:36:00Z" */
static time_t parse_timestamp(const char *s)
{
        struct tm tm = {0};
        char z = 0;
        if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
            z != 'Z')
                fail_msg("context.json: bad timestamp '%s'", s);
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        return timegm(&tm);
}

struct suite_context {
        char *access_key;
        char *secret_key;
        char *token;
        char *region;
        char *service;
        time_t timestamp;
        bool normalize;
        bool sign_body;
        bool omit_session_token;
        unsigned expires;
};

static void context_load(const char *dir, struct suite_context *c)
{
        char *doc = read_file(dir, "context.json", NULL);
        c->access_key = json_string(doc, "access_key_id");
        c->secret_key = json_string(doc, "secret_access_key");
        c->token = json_string(doc, "token");
        c->region = json_string(doc, "region");
        c->service = json_string(doc, "service");
        char *ts = json_string(doc, "timestamp");
        if (!c->access_key || !c->secret_key || !c->region || !c->service || !ts)
                fail_msg("%s/context.json: a required field is missing", dir);
        c->timestamp = parse_timestamp(ts);
        c->normalize = json_bool(doc, "normalize", true);
        c->sign_body = json_bool(doc, "sign_body", false);
        c->omit_session_token = json_bool(doc, "omit_session_token", false);
        c->expires = json_uint(doc, "expiration_in_seconds");
        free(ts);
        free(doc);
}

static void context_release(struct suite_context *c)
{
        free(c->access_key);
        free(c->secret_key);
        free(c->token);
        free(c->region);
        free(c->service);
}

/*
 * request.txt: "METHOD TARGET HTTP/1.1", header lines "Name:value" where a
 * line starting with whitespace continues the previous value (kept with its
 * line break: folding is the signer's job), then optionally an empty line
 * and the body.  The target may contain spaces, so the version is whatever
 * follows the last space.
 */
struct suite_request {
        char *method;
        char *path; /* exactly as in the request line */
        char *query;
        struct cairn_sigv4_header headers[32];
        char *names[32];
        char *values[32];
        size_t nheaders;
        char *header_block; /* the header lines verbatim, each ending in '\n' */
        const char *body;
        size_t body_len;
        char *text;
};

static void request_load(const char *dir, struct suite_request *r)
{
        size_t len;
        memset(r, 0, sizeof(*r));
        r->text = read_file(dir, "request.txt", &len);
        const char *eol = strchr(r->text, '\n');
        if (!eol)
                fail_msg("%s/request.txt: no request line", dir);
        const char *sp1 = memchr(r->text, ' ', (size_t)(eol - r->text));
        const char *sp2 = eol;
        while (sp2 > r->text && sp2[-1] != ' ')
                sp2--;
        sp2--;
        if (!sp1 || sp2 <= sp1 || strncmp(sp2, " HTTP/1.1", 9) != 0)
                fail_msg("%s/request.txt: malformed request line", dir);
        r->method = xstrndup(r->text, (size_t)(sp1 - r->text));
        const char *target = sp1 + 1;
        size_t tlen = (size_t)(sp2 - target);
        const char *q = memchr(target, '?', tlen);
        r->path = xstrndup(target, q ? (size_t)(q - target) : tlen);
        r->query = q ? xstrndup(q + 1, (size_t)(target + tlen - q - 1)) : xstrndup("", 0);

        const char *p = eol + 1;
        const char *block = p;
        while (*p && *p != '\n') {
                const char *end = strchr(p, '\n');
                size_t llen = end ? (size_t)(end - p) : strlen(p);
                if (*p == ' ' || *p == '\t') {
                        if (r->nheaders == 0)
                                fail_msg("%s/request.txt: continuation before any header", dir);
                        char *v = r->values[r->nheaders - 1];
                        char *joined = xasprintf("%s\n%.*s", v, (int)llen, p);
                        free(v);
                        r->values[r->nheaders - 1] = joined;
                } else {
                        const char *colon = memchr(p, ':', llen);
                        if (!colon)
                                fail_msg("%s/request.txt: header line without ':'", dir);
                        if (r->nheaders == sizeof(r->headers) / sizeof(r->headers[0]))
                                fail_msg("%s/request.txt: too many headers", dir);
                        r->names[r->nheaders] = xstrndup(p, (size_t)(colon - p));
                        r->values[r->nheaders] =
                            xstrndup(colon + 1, (size_t)(p + llen - colon - 1));
                        r->nheaders++;
                }
                p = end ? end + 1 : p + llen;
        }
        r->header_block = xstrndup(block, (size_t)(p - block));
        if (*p == '\n') {
                r->body = p + 1;
                r->body_len = len - (size_t)(r->body - r->text);
        } else {
                r->body = "";
                r->body_len = 0;
        }
        for (size_t i = 0; i < r->nheaders; i++)
                r->headers[i] = (struct cairn_sigv4_header){r->names[i], r->values[i]};
}

static void request_release(struct suite_request *r)
{
        for (size_t i = 0; i < r->nheaders; i++) {
                free(r->names[i]);
                free(r->values[i]);
        }
        free(r->method);
        free(r->path);
        free(r->query);
        free(r->header_block);
        free(r->text);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        assert_int_equal(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
        assert_int_equal(n, 32);
        for (unsigned i = 0; i < 32; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Byte-for-byte comparison with the expected file; shows both on mismatch. */
static bool expect_file(const char *dir, const char *form, const char *what, const char *got)
{
        char *name = xasprintf("%s-%s.txt", form, what);
        size_t len;
        char *want = read_file(dir, name, &len);
        bool ok = got && strlen(got) == len && memcmp(got, want, len) == 0;
        if (!ok)
                print_error("%s/%s differs\n----- expected -----\n%s\n----- got -----\n%s\n"
                            "--------------------\n",
                            dir, name, want, got ? got : "(null)");
        free(want);
        free(name);
        return ok;
}

static bool run_form(const char *dir, const struct suite_context *c, const struct suite_request *r,
                     bool query_form)
{
        const char *form = query_form ? "query" : "header";
        struct cairn_sigv4_header headers[40];
        size_t nheaders = r->nheaders;
        char body_hash[65];
        sha256_hex(r->body, r->body_len, body_hash);

        memcpy(headers, r->headers, nheaders * sizeof(headers[0]));
        /* With sign_body the client sends (and signs) the payload hash as a header. */
        if (!query_form && c->sign_body)
                headers[nheaders++] =
                    (struct cairn_sigv4_header){"x-amz-content-sha256", body_hash};

        struct cairn_sigv4_request req = {
            .method = r->method,
            .path = r->path,
            .query = r->query,
            .headers = headers,
            .nheaders = nheaders,
            .payload_hash = body_hash,
        };
        struct cairn_sigv4_params params = {
            .region = c->region,
            .service = c->service,
            .timestamp = c->timestamp,
            .normalize_path = c->normalize,
            .query_form = query_form,
            .expires = c->expires,
            .omit_session_token_from_signature = c->omit_session_token,
        };
        struct cairn_sigv4_credentials creds = {c->access_key, c->secret_key, c->token};
        struct cairn_sigv4_result res;
        int ret = cairn_sigv4_sign(&req, &params, &creds, &res);
        if (ret < 0) {
                print_error("%s (%s form): cairn_sigv4_sign: %s\n", dir, form, strerror(-ret));
                return false;
        }

        bool ok = expect_file(dir, form, "canonical-request", res.canonical_request);
        ok &= expect_file(dir, form, "string-to-sign", res.string_to_sign);
        ok &= expect_file(dir, form, "signature", res.signature);

        char *signed_request;
        if (query_form) {
                assert_null(res.authorization);
                signed_request = xasprintf("%s %s?%s HTTP/1.1\n%s\n%.*s", r->method, r->path,
                                           res.query, r->header_block, (int)r->body_len, r->body);
        } else {
                assert_null(res.query);
                /* The headers a client adds after signing, in the suite's order. */
                char *token =
                    c->token ? xasprintf("X-Amz-Security-Token:%s\n", c->token) : xstrndup("", 0);
                char *content = c->sign_body ? xasprintf("x-amz-content-sha256:%s\n", body_hash)
                                             : xstrndup("", 0);
                signed_request = xasprintf(
                    "%s %s%s%s HTTP/1.1\n%s%sX-Amz-Date:%s\n%sAuthorization:%s\n\n%.*s", r->method,
                    r->path, *r->query ? "?" : "", r->query, r->header_block, token, res.amz_date,
                    content, res.authorization, (int)r->body_len, r->body);
                free(token);
                free(content);
        }
        ok &= expect_file(dir, form, "signed-request", signed_request);
        free(signed_request);

        /*
         * The same request as an S3 client sends it: path percent-encoded,
         * and in header form X-Amz-Date (and the token, when signed) passed
         * in explicitly.  Must not change a byte of the result.
         */
        char *encoded_path = NULL;
        assert_int_equal(cairn_sigv4_uri_encode(r->path, strlen(r->path), true, &encoded_path), 0);
        req.path = encoded_path;
        if (!query_form) {
                headers[nheaders++] = (struct cairn_sigv4_header){"X-Amz-Date", res.amz_date};
                if (c->token && !c->omit_session_token)
                        headers[nheaders++] =
                            (struct cairn_sigv4_header){"X-Amz-Security-Token", c->token};
                req.nheaders = nheaders;
        }
        struct cairn_sigv4_result again;
        ret = cairn_sigv4_sign(&req, &params, &creds, &again);
        if (ret < 0) {
                print_error("%s (%s form, encoded path): cairn_sigv4_sign: %s\n", dir, form,
                            strerror(-ret));
                ok = false;
        } else {
                if (strcmp(again.canonical_request, res.canonical_request) != 0 ||
                    strcmp(again.signature, res.signature) != 0) {
                        print_error("%s (%s form): path '%s' signs differently from '%s'\n", dir,
                                    form, encoded_path, r->path);
                        ok = false;
                }
                cairn_sigv4_result_release(&again);
        }
        free(encoded_path);
        cairn_sigv4_result_release(&res);
        return ok;
}

static void test_suite_case(void **state)
{
        const char *dir = *state;
        struct suite_context c = {0};
        struct suite_request r;
        context_load(dir, &c);
        request_load(dir, &r);
        bool ok = run_form(dir, &c, &r, false);
        ok &= run_form(dir, &c, &r, true);
        request_release(&r);
        context_release(&c);
        if (!ok)
                fail_msg("%s: output differs from the AWS SigV4 test suite", dir);
}

/* ---- AWS S3 documentation examples (service s3, unnormalized paths) ---- */

#define DOC_ACCESS "AKIAIOSFODNN7EXAMPLE"
#define DOC_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define DOC_HOST   "examplebucket.s3.amazonaws.com"
#define DOC_TIME   ((time_t)1369353600) /* 2013-05-24T00:00:00Z */
#define EMPTY_HASH "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const struct cairn_sigv4_credentials doc_creds = {DOC_ACCESS, DOC_SECRET, NULL};
static const struct cairn_sigv4_params doc_params = {
    .region = "us-east-1",
    .service = "s3",
    .timestamp = DOC_TIME,
    .normalize_path = false,
};

static void test_s3_doc_get_object(void **state)
{
        (void)state;
        const struct cairn_sigv4_header h[] = {
            {"Host", DOC_HOST},
            {"Range", "bytes=0-9"},
            {"x-amz-content-sha256", EMPTY_HASH},
        };
        const struct cairn_sigv4_request req = {"GET", "/test.txt", "", h, 3, EMPTY_HASH};
        struct cairn_sigv4_result res;
        assert_int_equal(cairn_sigv4_sign(&req, &doc_params, &doc_creds, &res), 0);
        assert_string_equal(res.canonical_request,
                            "GET\n/test.txt\n\nhost:" DOC_HOST "\nrange:bytes=0-9\n"
                            "x-amz-content-sha256:" EMPTY_HASH "\nx-amz-date:20130524T000000Z\n\n"
                            "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_HASH);
        assert_string_equal(
            res.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
        assert_string_equal(
            res.authorization,
            "AWS4-HMAC-SHA256 Credential=" DOC_ACCESS "/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert_string_equal(res.amz_date, "20130524T000000Z");
        cairn_sigv4_result_release(&res);
}

static void test_s3_doc_put_object(void **state)
{
        (void)state;
        const char body[] = "Welcome to Amazon S3.";
        char hash[65];
        sha256_hex(body, strlen(body), hash);
        assert_string_equal(hash,
                            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        char *path = NULL;
        assert_int_equal(cairn_sigv4_uri_encode("/test$file.text", 15, true, &path), 0);
        assert_string_equal(path, "/test%24file.text");
        const struct cairn_sigv4_header h[] = {
            {"Host", DOC_HOST},
            {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
            {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
            {"x-amz-content-sha256", hash},
        };
        const struct cairn_sigv4_request req = {"PUT", path, "", h, 4, hash};
        struct cairn_sigv4_result res;
        assert_int_equal(cairn_sigv4_sign(&req, &doc_params, &doc_creds, &res), 0);
        assert_string_equal(res.signature,
                            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
        assert_non_null(strstr(res.canonical_request, "PUT\n/test%24file.text\n\n"));
        cairn_sigv4_result_release(&res);
        free(path);
}

static void test_s3_doc_bucket_queries(void **state)
{
        (void)state;
        const struct cairn_sigv4_header h[] = {
            {"Host", DOC_HOST},
            {"x-amz-content-sha256", EMPTY_HASH},
        };
        /* A parameter without '=' is signed as "name=". */
        struct cairn_sigv4_request req = {"GET", "/", "lifecycle", h, 2, EMPTY_HASH};
        struct cairn_sigv4_result res;
        assert_int_equal(cairn_sigv4_sign(&req, &doc_params, &doc_creds, &res), 0);
        assert_non_null(strstr(res.canonical_request, "GET\n/\nlifecycle=\n"));
        assert_string_equal(res.signature,
                            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
        cairn_sigv4_result_release(&res);

        /* Parameters are signed sorted whatever their order on the wire. */
        req.query = "prefix=J&max-keys=2";
        assert_int_equal(cairn_sigv4_sign(&req, &doc_params, &doc_creds, &res), 0);
        assert_non_null(strstr(res.canonical_request, "GET\n/\nmax-keys=2&prefix=J\n"));
        assert_string_equal(res.signature,
                            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
        cairn_sigv4_result_release(&res);
}

static void test_s3_doc_presigned(void **state)
{
        (void)state;
        const struct cairn_sigv4_header h[] = {{"Host", DOC_HOST}};
        const struct cairn_sigv4_request req = {"GET", "/test.txt", "", h, 1, "UNSIGNED-PAYLOAD"};
        struct cairn_sigv4_params params = doc_params;
        params.query_form = true;
        params.expires = 86400;
        struct cairn_sigv4_result res;
        assert_int_equal(cairn_sigv4_sign(&req, &params, &doc_creds, &res), 0);
        assert_null(res.authorization);
        assert_string_equal(
            res.query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" DOC_ACCESS
                       "%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z"
                       "&X-Amz-SignedHeaders=host&X-Amz-Expires=86400&X-Amz-Signature="
                       "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
        cairn_sigv4_result_release(&res);
}

/* ---- S3 keys: encoding and unnormalized signing ---- */

static void expect_encoded(const char *in, size_t len, bool keep_slash, const char *want)
{
        char *out = (char *)"untouched";
        assert_int_equal(cairn_sigv4_uri_encode(in, len, keep_slash, &out), 0);
        assert_string_equal(out, want);
        free(out);
}

static void test_uri_encode(void **state)
{
        (void)state;
        const char *key = "a b+c%d:e~f//g/\xc3\xa9";
        expect_encoded(key, strlen(key), true, "a%20b%2Bc%25d%3Ae~f//g/%C3%A9");
        expect_encoded(key, strlen(key), false, "a%20b%2Bc%25d%3Ae~f%2F%2Fg%2F%C3%A9");
        expect_encoded("", 0, true, "");
        expect_encoded(NULL, 0, false, "");
        /* Length, not NUL, ends the input. */
        expect_encoded("a\0b", 3, false, "a%00b");
        expect_encoded("ab", 1, false, "a");
        expect_encoded("-_.~AZaz09", 10, false, "-_.~AZaz09");
        expect_encoded("!*'();@&=$,?#[]", 15, true,
                       "%21%2A%27%28%29%3B%40%26%3D%24%2C%3F%23%5B%5D");

        /* Every byte: unreserved kept, everything else %XX with uppercase hex. */
        char all[256];
        for (int i = 0; i < 256; i++)
                all[i] = (char)i;
        char *out = NULL;
        assert_int_equal(cairn_sigv4_uri_encode(all, sizeof(all), false, &out), 0);
        const char *p = out;
        for (int i = 0; i < 256; i++) {
                bool unreserved = (i >= 'A' && i <= 'Z') || (i >= 'a' && i <= 'z') ||
                                  (i >= '0' && i <= '9') || i == '-' || i == '_' || i == '.' ||
                                  i == '~';
                if (unreserved) {
                        assert_int_equal(*p, i);
                        p++;
                } else {
                        char want[4];
                        snprintf(want, sizeof(want), "%%%02X", i);
                        assert_memory_equal(p, want, 3);
                        p += 3;
                }
        }
        assert_int_equal(*p, '\0');
        free(out);
}

static void sign_s3_path(const char *path, bool normalize, struct cairn_sigv4_result *res)
{
        const struct cairn_sigv4_header h[] = {
            {"host", "127.0.0.1:9000"},
            {"x-amz-content-sha256", "UNSIGNED-PAYLOAD"},
        };
        const struct cairn_sigv4_request req = {"GET", path, "", h, 2, "UNSIGNED-PAYLOAD"};
        struct cairn_sigv4_params params = doc_params;
        params.normalize_path = normalize;
        assert_int_equal(cairn_sigv4_sign(&req, &params, &doc_creds, res), 0);
}

/* Signs GET path and checks the canonical URI line; the signature goes to ret_sig if asked. */
static void expect_canonical_uri(const char *path, bool normalize, const char *want, char *ret_sig)
{
        struct cairn_sigv4_result res;
        sign_s3_path(path, normalize, &res);
        const char *uri = res.canonical_request + strlen("GET\n");
        const char *eol = strchr(uri, '\n');
        assert_non_null(eol);
        if ((size_t)(eol - uri) != strlen(want) || memcmp(uri, want, strlen(want)) != 0)
                fail_msg("path '%s' (%s): canonical URI '%.*s', want '%s'", path,
                         normalize ? "normalized" : "unnormalized", (int)(eol - uri), uri, want);
        if (ret_sig)
                memcpy(ret_sig, res.signature, sizeof(res.signature));
        cairn_sigv4_result_release(&res);
}

static void test_s3_keys_unnormalized(void **state)
{
        (void)state;
        const char *key = "models/a b+c%d:e~f//g/./../\xc3\xa9";
        const char *want = "/bucket/models/a%20b%2Bc%25d%3Ae~f//g/./../%C3%A9";
        char *enc = NULL;
        assert_int_equal(cairn_sigv4_uri_encode(key, strlen(key), true, &enc), 0);
        char *path = xasprintf("/bucket/%s", enc);
        assert_string_equal(path, want);

        /* S3: the encoded key is signed exactly as sent, "//", "." and ".." included. */
        char sig[65], sig2[65];
        expect_canonical_uri(path, false, want, sig);
        /* Lowercase or needless escapes reach the same canonical form. */
        expect_canonical_uri("/bucket/models/a%20b%2bc%25d:e%7Ef//g/./../%c3%a9", false, want,
                             sig2);
        assert_string_equal(sig, sig2);
        /* Normalizing the same path would sign a different key. */
        expect_canonical_uri(path, true, "/bucket/models/a%20b%2Bc%25d%3Ae~f/%C3%A9", sig2);
        assert_string_not_equal(sig, sig2);

        /* A '%' that starts no escape is a literal percent sign. */
        expect_canonical_uri("/b/100%", false, "/b/100%25", NULL);
        expect_canonical_uri("/b/%zz%4", false, "/b/%25zz%254", NULL);
        /* An escaped slash belongs to the key; only a literal one separates. */
        expect_canonical_uri("/b/a%2fb/c", false, "/b/a%2Fb/c", NULL);
        expect_canonical_uri("/b/a%2fb/c/..", true, "/b/a%2Fb/", NULL);

        free(path);
        free(enc);
}

static void test_normalize_edges(void **state)
{
        (void)state;
        static const struct {
                const char *in;
                const char *want;
        } cases[] = {
            {"", "/"},
            {"/", "/"},
            {"/a/b/..", "/a/"},
            {"/a/b/.", "/a/b/"},
            {"/../../a", "/a"},
            {"/a/./b/../c", "/a/c"},
            {"///", "/"},
            {"/a//b", "/a/b"},
            {"/a/..b", "/a/..b"},
            {"/.a/b.", "/.a/b."},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                expect_canonical_uri(cases[i].in, true, cases[i].want, NULL);
        /* Unnormalized, only the empty path changes. */
        expect_canonical_uri("", false, "/", NULL);
        expect_canonical_uri("/a/./b/../c//", false, "/a/./b/../c//", NULL);
}

static void test_query_canonical(void **state)
{
        (void)state;
        const struct cairn_sigv4_header h[] = {{"Host", DOC_HOST}};
        struct cairn_sigv4_request req = {"GET", "/", NULL, h, 1, EMPTY_HASH};
        struct cairn_sigv4_result res;
        static const struct {
                const char *in;
                const char *want;
        } cases[] = {
            {NULL, ""},
            {"", ""},
            {"&&", ""},
            {"b=2&a=1&a=0", "a=0&a=1&b=2"},
            {"uploadId=x%2By&partNumber=3", "partNumber=3&uploadId=x%2By"},
            {"prefix=a b+c/d~", "prefix=a%20b%2Bc%2Fd~"},
            {"k=v=w", "k=v%3Dw"},
            {"=v", "=v"},
            {"list-type=2&continuation-token=%2f%2F", "continuation-token=%2F%2F&list-type=2"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                req.query = cases[i].in;
                assert_int_equal(cairn_sigv4_sign(&req, &doc_params, &doc_creds, &res), 0);
                char *want = xasprintf("GET\n/\n%s\nhost:", cases[i].want);
                if (strncmp(res.canonical_request, want, strlen(want)) != 0)
                        fail_msg("query '%s': got canonical request\n%s",
                                 cases[i].in ? cases[i].in : "(null)", res.canonical_request);
                free(want);
                cairn_sigv4_result_release(&res);
        }
}

static void test_session_token_header_form(void **state)
{
        (void)state;
        const struct cairn_sigv4_credentials creds = {DOC_ACCESS, DOC_SECRET, "tok/en+=="};
        const struct cairn_sigv4_header h[] = {{"Host", DOC_HOST}};
        const struct cairn_sigv4_request req = {"HEAD", "/k", "", h, 1, "UNSIGNED-PAYLOAD"};
        struct cairn_sigv4_params params = doc_params;
        struct cairn_sigv4_result res;
        assert_int_equal(cairn_sigv4_sign(&req, &params, &creds, &res), 0);
        assert_non_null(strstr(res.canonical_request, "\nx-amz-security-token:tok/en+==\n\n"
                                                      "host;x-amz-date;x-amz-security-token\n"));
        char sig[65];
        memcpy(sig, res.signature, sizeof(sig));
        cairn_sigv4_result_release(&res);

        params.omit_session_token_from_signature = true;
        assert_int_equal(cairn_sigv4_sign(&req, &params, &creds, &res), 0);
        assert_null(strstr(res.canonical_request, "tok/en"));
        assert_string_not_equal(res.signature, sig);
        cairn_sigv4_result_release(&res);
}

static void test_rejects_bad_input(void **state)
{
        (void)state;
        const struct cairn_sigv4_header good[] = {{"Host", DOC_HOST}};
        const struct cairn_sigv4_header no_host[] = {{"x-amz-date", "20130524T000000Z"}};
        const struct cairn_sigv4_header bad_name[] = {{"Host", DOC_HOST}, {"Bad Name", "v"}};
        const struct cairn_sigv4_header null_value[] = {{"Host", NULL}};
        struct cairn_sigv4_result res, sentinel;
        memset(&sentinel, 0xa5, sizeof(sentinel));

        struct {
                struct cairn_sigv4_request req;
                struct cairn_sigv4_params params;
                struct cairn_sigv4_credentials creds;
        } cases[] = {
            {{"GET", "/", "", no_host, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", "/", "", bad_name, 2, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", "/", "", null_value, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", "/", "", NULL, 0, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", "/a?b", "", good, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", NULL, "", good, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"G T", "/", "", good, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"", "/", "", good, 1, EMPTY_HASH}, doc_params, doc_creds},
            {{"GET", "/", "", good, 1, NULL}, doc_params, doc_creds},
            {{"GET", "/", "", good, 1, "abc\ndef"}, doc_params, doc_creds},
            {{"GET", "/", "", good, 1, EMPTY_HASH}, doc_params, {NULL, DOC_SECRET, NULL}},
            {{"GET", "/", "", good, 1, EMPTY_HASH}, doc_params, {"AK/ID", DOC_SECRET, NULL}},
            {{"GET", "/", "", good, 1, EMPTY_HASH}, doc_params, {DOC_ACCESS, "", NULL}},
            {{"GET", "/", "", good, 1, EMPTY_HASH}, doc_params, {DOC_ACCESS, NULL, NULL}},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                memcpy(&res, &sentinel, sizeof(res));
                int r = cairn_sigv4_sign(&cases[i].req, &cases[i].params, &cases[i].creds, &res);
                if (r != -EINVAL)
                        fail_msg("bad input %zu: got %d, want -EINVAL", i, r);
                /* ret_* is untouched on failure. */
                assert_memory_equal(&res, &sentinel, sizeof(res));
        }

        const struct cairn_sigv4_request req = {"GET", "/", "", good, 1, EMPTY_HASH};
        struct cairn_sigv4_params p = doc_params;
        p.region = "us/east";
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), -EINVAL);
        p = doc_params;
        p.service = "";
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), -EINVAL);
        p = doc_params;
        p.timestamp = -1;
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), -EINVAL);
        p = doc_params;
        p.query_form = true;
        p.expires = 0;
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), -EINVAL);
        p.expires = 604801;
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), -EINVAL);
        p.expires = 604800;
        assert_int_equal(cairn_sigv4_sign(&req, &p, &doc_creds, &res), 0);
        cairn_sigv4_result_release(&res);
        assert_int_equal(cairn_sigv4_sign(NULL, &doc_params, &doc_creds, &res), -EINVAL);

        /* Release is idempotent and accepts NULL. */
        cairn_sigv4_result_release(&res);
        cairn_sigv4_result_release(NULL);
}

static int select_case(const struct dirent *d)
{
        return d->d_name[0] != '.';
}

int main(void)
{
        const struct CMUnitTest unit_tests[] = {
            cmocka_unit_test(test_uri_encode),
            cmocka_unit_test(test_s3_doc_get_object),
            cmocka_unit_test(test_s3_doc_put_object),
            cmocka_unit_test(test_s3_doc_bucket_queries),
            cmocka_unit_test(test_s3_doc_presigned),
            cmocka_unit_test(test_s3_keys_unnormalized),
            cmocka_unit_test(test_normalize_edges),
            cmocka_unit_test(test_query_canonical),
            cmocka_unit_test(test_session_token_header_form),
            cmocka_unit_test(test_rejects_bad_input),
        };
        int failed = cmocka_run_group_tests_name("sigv4", unit_tests, NULL, NULL);

        const char *testdata = getenv("CAIRN_SHARED_TESTDATA");
        if (!testdata || !*testdata) {
                fprintf(stderr, "test_sigv4: CAIRN_SHARED_TESTDATA is not set; it must point at "
                                "shared/testdata (ctest sets it) so that the AWS SigV4 test suite "
                                "in its sigv4/ directory can run\n");
                return 1;
        }
        char *root = xasprintf("%s/sigv4", testdata);
        struct dirent **names = NULL;
        int n = scandir(root, &names, select_case, alphasort);
        if (n < 0) {
                fprintf(stderr, "test_sigv4: cannot read the AWS SigV4 test suite '%s': %s\n", root,
                        strerror(errno));
                return 1;
        }

        struct CMUnitTest *cases = calloc((size_t)n, sizeof(*cases));
        assert_non_null(cases);
        size_t ncases = 0;
        for (int i = 0; i < n; i++) {
                char *dir = xasprintf("%s/%s", root, names[i]->d_name);
                char *req = xasprintf("%s/request.txt", dir);
                struct stat st;
                if (stat(req, &st) == 0) {
                        cases[ncases++] = (struct CMUnitTest){
                            .name = names[i]->d_name,
                            .test_func = test_suite_case,
                            .initial_state = dir,
                        };
                } else {
                        free(dir);
                }
                free(req);
        }
        if (ncases < SUITE_MIN_CASES) {
                fprintf(stderr, "test_sigv4: '%s' holds %zu test cases, expected at least %d\n",
                        root, ncases, SUITE_MIN_CASES);
                failed++;
        }
        failed += _cmocka_run_group_tests("aws-sigv4-test-suite", cases, ncases, NULL, NULL);

        for (size_t i = 0; i < ncases; i++)
                free(cases[i].initial_state);
        free(cases);
        for (int i = 0; i < n; i++)
                free(names[i]);
        free(names);
        free(root);
        return failed ? 1 : 0;
}
