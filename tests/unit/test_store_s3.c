/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The s3:// store against a scripted S3 server in this process (a small
 * HTTP/1.1 server on a loopback port that records every request and
 * answers as a test tells it).  Real-server behaviour, signatures
 * included, is tests/integration/test_s3_store.sh's job (versitygw); here
 * the point is what such a server cannot easily be made to do, and what
 * exactly goes on the wire:
 * - URLs: keys percent-encoded (spaces, '+', '%', UTF-8), path-style and
 *   virtual-hosted addressing, bad bucket names and prefixes refused
 *   before any request;
 * - headers: the Host that was signed, x-amz-content-sha256 equal to the
 *   SHA-256 of what was sent (every part of a multipart upload too), an
 *   Authorization header when signing and none when anonymous;
 * - writes: HEAD first (an existing blob of the right size is not sent
 *   again), one PUT for small blobs, CreateMultipartUpload + parallel
 *   UploadPart + CompleteMultipartUpload for large ones, with the parts'
 *   ETags in order; a failed part and a completion that answers 200 with
 *   an <Error> body both end in AbortMultipartUpload and an error;
 * - errors: a missing ref is -ENOENT, SignatureDoesNotMatch and a 404
 *   "no such user" are -EACCES, and the open-time probe says
 *   "authentication failed: CODE" without ever quoting the secret.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/digest.h"
#include "cairn/fetch.h"
#include "cairn/store.h"

#define SECRET "wrong+and/secret=SECRETVALUE1234"
#define MiB (1024u * 1024)
#define MAX_REQS 512

/* ---------------------------------------------------------------- the server */

struct req {
        char method[16];
        char target[1024];
        char host[256];
        char auth[1024];
        char content_sha[80];
        char range[80];
        size_t body_len;
        char body_sha[CAIRN_DIGEST_HEX_LEN + 1];
        char body[8192]; /* the start of the body, NUL-terminated */
};

struct server {
        int lfd;
        uint16_t port;
        pthread_t thread;
        pthread_mutex_t lock;
        struct req reqs[MAX_REQS]; /* protected by lock */
        unsigned nreqs;            /* protected by lock */
        unsigned conns;            /* protected by lock */
        /* The script (set before the requests it concerns). */
        const char *probe_status;  /* NULL: 404 NoSuchKey */
        const char *probe_code;
        uint64_t existing_size;    /* HEAD of a blob: UINT64_MAX is 404 */
        unsigned fail_part;        /* UploadPart N answers 400 */
        bool complete_error;       /* CompleteMultipartUpload answers 200 + <Error> */
        bool complete_loses_bytes; /* the completed object is one byte short */
        uint64_t parts_total;      /* bytes of the parts received; protected by lock */
        unsigned parts_active;     /* part uploads being answered; protected by lock */
        unsigned parts_active_max; /* protected by lock */
        const char *ref_status;    /* GET of a ref */
        const char *ref_body;
        const uint8_t *blob;       /* GET of a blob (ranges honoured) */
        size_t blob_len;
};

static struct server srv;

static char *find_header(char *head, const char *name)
{
        size_t n = strlen(name);
        for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
                char *l = line + 2;
                if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
                        l += n + 1;
                        while (*l == ' ')
                                l++;
                        return l;
                }
        }
        return NULL;
}

static void copy_header(char *head, const char *name, char *out, size_t cap)
{
        char *v = find_header(head, name);
        out[0] = '\0';
        if (v) {
                size_t n = strcspn(v, "\r\n");
                snprintf(out, cap, "%.*s", (int)n, v);
        }
}

static bool write_all(int fd, const void *p, size_t len)
{
        const char *c = p;
        while (len) {
                ssize_t n = write(fd, c, len);
                if (n <= 0)
                        return false;
                c += n;
                len -= (size_t)n;
        }
        return true;
}

static bool respond(int fd, const char *status, const char *headers, const void *body,
                    size_t len, bool head_only)
{
        char h[1024];
        int n = snprintf(h, sizeof(h), "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s\r\n", status, len,
                         headers ? headers : "");
        return write_all(fd, h, (size_t)n) && (head_only || !len || write_all(fd, body, len));
}

static bool respond_xml_error(int fd, const char *status, const char *code, bool head_only)
{
        char body[512];
        int n = snprintf(body, sizeof(body),
                         "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                         "<Message>scripted %s; the secret is not " SECRET "</Message>"
                         "<RequestId>1</RequestId></Error>",
                         code, code);
        return respond(fd, status, "Content-Type: application/xml\r\n", body, (size_t)n,
                       head_only);
}

/* Answers one recorded request according to the script. */
static bool answer(int fd, const struct req *r)
{
        bool head = strcmp(r->method, "HEAD") == 0;
        const char *q = strchr(r->target, '?');
        char hdr[256];

        if (strstr(r->target, "/refs/.cairn-probe")) {
                if (srv.probe_status)
                        return respond_xml_error(fd, srv.probe_status, srv.probe_code, head);
                return respond_xml_error(fd, "404 Not Found", "NoSuchKey", head);
        }
        if (strstr(r->target, "/refs/")) {
                if (strncmp(srv.ref_status, "200", 3) == 0)
                        return respond(fd, "200 OK", NULL, srv.ref_body, strlen(srv.ref_body),
                                       head);
                return respond_xml_error(fd, srv.ref_status, srv.ref_body, head);
        }
        if (!strcmp(r->method, "HEAD")) {
                pthread_mutex_lock(&srv.lock);
                uint64_t existing = srv.existing_size;
                pthread_mutex_unlock(&srv.lock);
                if (existing == UINT64_MAX)
                        return respond(fd, "404 Not Found", NULL, NULL, 0, true);
                snprintf(hdr, sizeof(hdr), "Content-Length: %llu\r\n",
                         (unsigned long long)existing);
                return write_all(fd, "HTTP/1.1 200 OK\r\n", 17) && write_all(fd, hdr, strlen(hdr)) &&
                       write_all(fd, "\r\n", 2);
        }
        if (!strcmp(r->method, "GET") && srv.blob) {
                unsigned long long a, b;
                if (sscanf(r->range, "bytes=%llu-%llu", &a, &b) == 2 && b < srv.blob_len) {
                        snprintf(hdr, sizeof(hdr), "Content-Range: bytes %llu-%llu/%zu\r\n", a, b,
                                 srv.blob_len);
                        return respond(fd, "206 Partial Content", hdr, srv.blob + a,
                                       (size_t)(b - a + 1), false);
                }
                return respond(fd, "200 OK", NULL, srv.blob, srv.blob_len, false);
        }
        if (!strcmp(r->method, "POST") && q && !strcmp(q, "?uploads=")) {
                static const char xml[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                          "<InitiateMultipartUploadResult><Bucket>bkt</Bucket>"
                                          "<UploadId>up/1+x</UploadId>"
                                          "</InitiateMultipartUploadResult>";
                return respond(fd, "200 OK", NULL, xml, sizeof(xml) - 1, false);
        }
        if (!strcmp(r->method, "PUT") && q && strstr(q, "partNumber=")) {
                unsigned part = (unsigned)atoi(strstr(q, "partNumber=") + 11);
                if (part == srv.fail_part)
                        return respond_xml_error(fd, "400 Bad Request", "InvalidPart", false);
                /* Slow answers, so that parts sent in parallel overlap here. */
                pthread_mutex_lock(&srv.lock);
                srv.parts_total += r->body_len;
                if (++srv.parts_active > srv.parts_active_max)
                        srv.parts_active_max = srv.parts_active;
                pthread_mutex_unlock(&srv.lock);
                usleep(30000);
                pthread_mutex_lock(&srv.lock);
                srv.parts_active--;
                pthread_mutex_unlock(&srv.lock);
                snprintf(hdr, sizeof(hdr), "ETag: \"etag-%u\"\r\n", part);
                return respond(fd, "200 OK", hdr, NULL, 0, false);
        }
        if (!strcmp(r->method, "POST") && q && strstr(q, "uploadId=")) {
                if (srv.complete_error)
                        return respond_xml_error(fd, "200 OK", "InternalError", false);
                /* The object now exists, as big as its parts. */
                pthread_mutex_lock(&srv.lock);
                srv.existing_size = srv.parts_total - (srv.complete_loses_bytes ? 1 : 0);
                pthread_mutex_unlock(&srv.lock);
                static const char xml[] = "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag>"
                                          "</CompleteMultipartUploadResult>";
                return respond(fd, "200 OK", NULL, xml, sizeof(xml) - 1, false);
        }
        if (!strcmp(r->method, "DELETE"))
                return respond(fd, "204 No Content", NULL, NULL, 0, false);
        if (!strcmp(r->method, "PUT"))
                return respond(fd, "200 OK", "ETag: \"whole\"\r\n", NULL, 0, false);
        return respond_xml_error(fd, "400 Bad Request", "NotScripted", head);
}

static void *conn_thread(void *arg)
{
        int fd = (int)(intptr_t)arg;
        char *buf = malloc(65536);
        size_t have = 0;

        while (buf) {
                char *end;
                while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
                        if (have == 65535)
                                goto out;
                        ssize_t n = read(fd, buf + have, 65535 - have);
                        if (n <= 0)
                                goto out;
                        have += (size_t)n;
                }
                size_t head_len = (size_t)(end - buf) + 4;
                char head[16384];
                if (head_len >= sizeof(head))
                        goto out;
                memcpy(head, buf, head_len);
                head[head_len] = '\0';
                memmove(buf, buf + head_len, have - head_len);
                have -= head_len;

                struct req *r = calloc(1, sizeof(*r));
                if (!r)
                        goto out;
                sscanf(head, "%15s %1023s", r->method, r->target);
                copy_header(head, "Host", r->host, sizeof(r->host));
                copy_header(head, "Authorization", r->auth, sizeof(r->auth));
                copy_header(head, "x-amz-content-sha256", r->content_sha, sizeof(r->content_sha));
                copy_header(head, "Range", r->range, sizeof(r->range));
                char cl[32];
                copy_header(head, "Content-Length", cl, sizeof(cl));
                r->body_len = cl[0] ? strtoull(cl, NULL, 10) : 0;

                /* The body, hashed as it streams in; its start is kept. */
                struct cairn_sha256_ctx *h = NULL;
                struct cairn_digest d;
                cairn_sha256_ctx_new(&h);
                size_t left = r->body_len, kept = 0;
                while (left) {
                        if (!have) {
                                ssize_t n = read(fd, buf, 65536);
                                if (n <= 0) {
                                        cairn_sha256_ctx_free(h);
                                        free(r);
                                        goto out;
                                }
                                have = (size_t)n;
                        }
                        size_t take = have < left ? have : left;
                        cairn_sha256_ctx_update(h, buf, take);
                        if (kept < sizeof(r->body) - 1) {
                                size_t k = take < sizeof(r->body) - 1 - kept
                                                   ? take
                                                   : sizeof(r->body) - 1 - kept;
                                memcpy(r->body + kept, buf, k);
                                kept += k;
                        }
                        memmove(buf, buf + take, have - take);
                        have -= take;
                        left -= take;
                }
                cairn_sha256_ctx_final(h, &d);
                cairn_sha256_ctx_free(h);
                cairn_digest_to_hex(&d, r->body_sha);

                pthread_mutex_lock(&srv.lock);
                if (srv.nreqs < MAX_REQS)
                        srv.reqs[srv.nreqs++] = *r;
                pthread_mutex_unlock(&srv.lock);
                bool ok = answer(fd, r);
                free(r);
                if (!ok)
                        break;
        }
out:
        free(buf);
        close(fd);
        return NULL;
}

static void *accept_thread(void *arg)
{
        (void)arg;
        for (;;) {
                int fd = accept(srv.lfd, NULL, NULL);
                if (fd < 0)
                        return NULL; /* the listening socket was shut down */
                pthread_t t;
                pthread_mutex_lock(&srv.lock);
                srv.conns++;
                pthread_mutex_unlock(&srv.lock);
                if (pthread_create(&t, NULL, conn_thread, (void *)(intptr_t)fd) == 0)
                        pthread_detach(t);
                else
                        close(fd);
        }
}

static void script_reset(void)
{
        pthread_mutex_lock(&srv.lock);
        srv.nreqs = 0;
        srv.probe_status = NULL;
        srv.probe_code = NULL;
        srv.existing_size = UINT64_MAX;
        srv.fail_part = 0;
        srv.complete_error = false;
        srv.complete_loses_bytes = false;
        srv.parts_total = 0;
        srv.parts_active = 0;
        srv.parts_active_max = 0;
        srv.ref_status = "404 Not Found";
        srv.ref_body = "NoSuchKey";
        srv.blob = NULL;
        srv.blob_len = 0;
        pthread_mutex_unlock(&srv.lock);
}

static int server_start(void **state)
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        (void)state;

        pthread_mutex_init(&srv.lock, NULL);
        srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            listen(srv.lfd, 64) < 0 || getsockname(srv.lfd, (struct sockaddr *)&a, &alen) < 0)
                return -1;
        srv.port = ntohs(a.sin_port);
        if (pthread_create(&srv.thread, NULL, accept_thread, NULL) != 0)
                return -1;
        script_reset();

        /* The environment of every test: credentials, our endpoint, no files. */
        static const char *const unset[] = {"AWS_PROFILE", "AWS_SESSION_TOKEN",
                                            "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"};
        for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++)
                unsetenv(unset[i]);
        char ep[64];
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%u", srv.port);
        setenv("AWS_ENDPOINT_URL", ep, 1);
        setenv("AWS_REGION", "us-east-1", 1);
        setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
        setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
        setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        setenv("CAIRN_S3_PART_SIZE", "5M", 1);
        setenv("CAIRN_S3_UPLOAD_PARALLEL", "3", 1);
        return 0;
}

static int server_stop(void **state)
{
        (void)state;
        shutdown(srv.lfd, SHUT_RDWR);
        close(srv.lfd);
        pthread_join(srv.thread, NULL);
        return 0;
}

/* A copy of the requests so far. */
static unsigned requests(struct req **ret)
{
        pthread_mutex_lock(&srv.lock);
        unsigned n = srv.nreqs;
        *ret = malloc((n ? n : 1) * sizeof(**ret));
        assert_non_null(*ret);
        memcpy(*ret, srv.reqs, n * sizeof(**ret));
        pthread_mutex_unlock(&srv.lock);
        return n;
}

/* An engine that gives up quickly: the scripted failures are final anyway. */
static struct cairn_fetch *fast_fetch(void)
{
        struct cairn_fetch_options fo = {
                .max_attempts = 2, .backoff_base_ms = 1, .backoff_max_ms = 5, .deadline_ms = 10000};
        struct cairn_fetch *f = NULL;
        assert_int_equal(cairn_fetch_new(&fo, &f), 0);
        return f;
}

static struct cairn_store *open_s3(const char *url, struct cairn_store_options *o,
                                   struct cairn_fetch *f)
{
        struct cairn_store *s = NULL;
        char err[512] = "";
        o->fetch = f;
        int r = cairn_store_open_with(url, o, &s, err, sizeof(err));
        if (r < 0)
                fail_msg("cannot open '%s': %s (%s)", url, err, strerror(-r));
        assert_true(cairn_store_is_remote(s));
        return s;
}

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
        for (size_t i = 0; i < len; i++) {
                seed = seed * 1103515245u + 12345u;
                p[i] = (uint8_t)(seed >> 16);
        }
}

static void sha_hex(const void *p, size_t len, char hex[CAIRN_DIGEST_HEX_LEN + 1])
{
        struct cairn_digest d;
        cairn_sha256(p, len, &d);
        cairn_digest_to_hex(&d, hex);
}

/* ---------------------------------------------------------------- tests */

static void test_bad_urls(void **state)
{
        static const char *const bad[] = {
                "s3://",           "s3:///prefix",  "s3://bad bucket/x", "s3://bkt/a//b",
                "s3://bkt/./a",    "s3://bkt/a/..", "s3://bkt/a\nb",     "s3://b%2fx",
                "s3://bkt/a/\x7f",
        };
        (void)state;
        script_reset();
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct cairn_store *s = NULL;
                char err[256] = "";
                assert_int_equal(cairn_store_open_with(bad[i], NULL, &s, err, sizeof(err)),
                                 -EINVAL);
                assert_null(s);
                assert_true(err[0] != '\0');
        }
        struct req *r;
        assert_int_equal(requests(&r), 0); /* refused before any request */
        free(r);
}

static void test_keys_and_headers(void **state)
{
        struct cairn_store_options o = {0};
        struct cairn_fetch *f = fast_fetch();
        struct cairn_digest d;
        struct req *r;
        char host[64];
        (void)state;

        script_reset();
        srv.ref_status = "200 OK";
        srv.ref_body = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
        struct cairn_store *s = open_s3("s3://bkt/odd key+%/\xc3\xa9/", &o, f);
        assert_int_equal(cairn_store_read_ref(s, "org/model", "v1.0", &d), 0);
        unsigned n = requests(&r);
        assert_int_equal(n, 2); /* the probe, the ref */
        snprintf(host, sizeof(host), "127.0.0.1:%u", srv.port);
        assert_string_equal(r[0].target, "/bkt/odd%20key%2B%25/%C3%A9/refs/.cairn-probe");
        assert_string_equal(r[1].target, "/bkt/odd%20key%2B%25/%C3%A9/refs/org/model/v1.0");
        for (unsigned i = 0; i < n; i++) {
                assert_string_equal(r[i].host, host);
                assert_string_equal(r[i].content_sha, "UNSIGNED-PAYLOAD");
                assert_true(strncmp(r[i].auth, "AWS4-HMAC-SHA256 Credential=AKIDTEST/", 37) == 0);
                assert_non_null(strstr(r[i].auth, "/us-east-1/s3/aws4_request"));
                assert_non_null(strstr(r[i].auth, "SignedHeaders=host;x-amz-content-sha256;"
                                                  "x-amz-date, Signature="));
                assert_null(strstr(r[i].auth, SECRET));
        }
        free(r);
        cairn_store_free(s);

        /* Anonymous: the same requests, unsigned. */
        script_reset();
        srv.ref_status = "200 OK";
        srv.ref_body = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        o.anonymous = true;
        s = open_s3("s3://bkt", &o, f);
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), 0);
        n = requests(&r);
        assert_int_equal(n, 2);
        assert_string_equal(r[1].target, "/bkt/refs/m/t");
        assert_string_equal(r[1].auth, "");
        free(r);
        cairn_store_free(s);

        /* Virtual-hosted: the bucket moves into the host name (curl resolves *.localhost). */
        script_reset();
        o = (struct cairn_store_options){.addressing = CAIRN_S3_ADDRESSING_VIRTUAL};
        char ep[64];
        snprintf(ep, sizeof(ep), "http://localhost:%u", srv.port);
        o.endpoint = ep;
        s = open_s3("s3://bkt/p", &o, f);
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -ENOENT);
        n = requests(&r);
        assert_int_equal(n, 2);
        snprintf(host, sizeof(host), "bkt.localhost:%u", srv.port);
        assert_string_equal(r[1].host, host);
        assert_string_equal(r[1].target, "/p/refs/m/t");
        free(r);
        cairn_store_free(s);

        /* A bucket that is no DNS name cannot be virtual-hosted: refused, or path style if auto. */
        struct cairn_store *bad = NULL;
        char err[256];
        assert_int_equal(cairn_store_open_with("s3://Bad_Bucket/p", &o, &bad, err, sizeof(err)),
                         -EINVAL);
        cairn_fetch_free(f);
}

static void test_errors(void **state)
{
        struct cairn_store_options o = {0};
        struct cairn_fetch *f = fast_fetch();
        struct cairn_store *s = NULL;
        struct cairn_digest d;
        char err[512];
        (void)state;

        /* At open: the probe names the failure; the secret never shows. */
        static const struct {
                const char *status, *code, *want;
                int r;
        } probes[] = {
                {"403 Forbidden", "SignatureDoesNotMatch",
                 "authentication failed: SignatureDoesNotMatch", -EACCES},
                {"403 Forbidden", "InvalidAccessKeyId", "authentication failed: InvalidAccessKeyId",
                 -EACCES},
                {"404 Not Found", "XAdminUserNotFound", "authentication failed: XAdminUserNotFound",
                 -EACCES},
                {"404 Not Found", "NoSuchBucket", "bucket 'bkt' does not exist", -ENOENT},
        };
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
                script_reset();
                srv.probe_status = probes[i].status;
                srv.probe_code = probes[i].code;
                o.fetch = f;
                err[0] = '\0';
                assert_int_equal(cairn_store_open_with("s3://bkt/p", &o, &s, err, sizeof(err)),
                                 probes[i].r);
                if (!strstr(err, probes[i].want))
                        fail_msg("'%s' does not say '%s'", err, probes[i].want);
                assert_null(strstr(err, SECRET));
                assert_null(strstr(err, "SECRETVALUE"));
        }
        /* AccessDenied at open is fine (no right to list); reads then fail with EACCES. */
        script_reset();
        srv.probe_status = "403 Forbidden";
        srv.probe_code = "AccessDenied";
        s = open_s3("s3://bkt/p", &o, f);

        /* Refs: missing, no such user, bad signature, garbage, too long. */
        srv.ref_status = "404 Not Found";
        srv.ref_body = "NoSuchKey";
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -ENOENT);
        srv.ref_body = "XAdminUserNotFound";
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -EACCES);
        srv.ref_status = "403 Forbidden";
        srv.ref_body = "SignatureDoesNotMatch";
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -EACCES);
        srv.ref_status = "200 OK";
        srv.ref_body = "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n";
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -EINVAL);
        srv.ref_body = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
                       "and a lot more that no ref object ever has in it";
        assert_int_equal(cairn_store_read_ref(s, "m", "t", &d), -EINVAL);
        cairn_store_free(s);
        cairn_fetch_free(f);
}

static void test_read_blob(void **state)
{
        struct cairn_store_options o = {0};
        struct cairn_fetch *f = fast_fetch();
        static uint8_t blob[300000];
        uint8_t buf[1000];
        struct cairn_digest d;
        struct req *r;
        (void)state;

        fill(blob, sizeof(blob), 5);
        cairn_sha256(blob, sizeof(blob), &d);
        script_reset();
        srv.blob = blob;
        srv.blob_len = sizeof(blob);
        srv.existing_size = sizeof(blob);
        struct cairn_store *s = open_s3("s3://bkt/p", &o, f);
        uint64_t size = 0;
        assert_int_equal(cairn_store_blob_size(s, &d, &size), 0);
        assert_int_equal(size, sizeof(blob));
        assert_int_equal(cairn_store_read_blob(s, &d, 123456, sizeof(buf), buf), 0);
        assert_memory_equal(buf, blob + 123456, sizeof(buf));
        unsigned n = requests(&r);
        assert_string_equal(r[n - 1].method, "GET");
        assert_string_equal(r[n - 1].range, "bytes=123456-124455");
        char hex[CAIRN_DIGEST_HEX_LEN + 1], path[128];
        cairn_digest_to_hex(&d, hex);
        snprintf(path, sizeof(path), "/bkt/p/blobs/sha256/%s", hex);
        assert_string_equal(r[n - 1].target, path);
        free(r);

        /* Scattered: one GET for the whole range, each buffer its slice. */
        static uint8_t s1[1], s2[4095], s3[70001];
        struct iovec iov[] = {{s1, sizeof(s1)}, {NULL, 0}, {s2, sizeof(s2)}, {s3, sizeof(s3)}};
        assert_int_equal(cairn_store_read_blob_iov_until(s, &d, 777, iov, 4, 0), 0);
        assert_memory_equal(s1, blob + 777, sizeof(s1));
        assert_memory_equal(s2, blob + 778, sizeof(s2));
        assert_memory_equal(s3, blob + 778 + sizeof(s2), sizeof(s3));
        n = requests(&r);
        assert_string_equal(r[n - 1].method, "GET");
        assert_string_equal(r[n - 1].range, "bytes=777-74873");
        free(r);
        /* Past the end of the blob: a short blob, as for a flat read. */
        assert_int_equal(cairn_store_read_blob_iov_until(s, &d, sizeof(blob) - 70000, iov, 4, 0),
                         -EIO);
        /* A zero total is no request. */
        unsigned before = requests(&r);
        free(r);
        iov[0].iov_len = iov[2].iov_len = iov[3].iov_len = 0;
        assert_int_equal(cairn_store_read_blob_iov_until(s, &d, 5, iov, 4, 0), 0);
        assert_int_equal(requests(&r), before);
        free(r);

        /* Whole blob into an fd, under a cap. */
        FILE *tmp = tmpfile();
        assert_non_null(tmp);
        assert_int_equal(cairn_store_copy_blob_to_fd(s, &d, fileno(tmp), sizeof(blob), &size), 0);
        assert_int_equal(size, sizeof(blob));
        assert_int_equal(cairn_store_copy_blob_to_fd(s, &d, fileno(tmp), 1000, &size), -EFBIG);
        fclose(tmp);
        cairn_store_free(s);
        cairn_fetch_free(f);
}

/* Writes len bytes as one blob; the requests it made after the probe. */
static int put_blob(const uint8_t *data, size_t len, bool *ret_created, struct req **ret_reqs,
                    unsigned *ret_n, struct cairn_digest *ret_d)
{
        struct cairn_store_options o = {0};
        struct cairn_fetch *f = fast_fetch();
        struct cairn_store *s = open_s3("s3://bkt/pre", &o, f);
        struct cairn_blob_writer *w = NULL;
        assert_int_equal(cairn_store_blob_writer_new(s, &w), 0);
        /* In uneven pieces, as a packer writes. */
        for (size_t off = 0; off < len;) {
                size_t piece = len - off < 777777 ? len - off : 777777;
                assert_int_equal(cairn_blob_writer_write(w, data + off, piece), 0);
                off += piece;
        }
        pthread_mutex_lock(&srv.lock);
        unsigned before = srv.nreqs;
        pthread_mutex_unlock(&srv.lock);
        int rc = cairn_blob_writer_commit(w, ret_d, ret_created);
        cairn_blob_writer_free(w);
        cairn_store_free(s);
        cairn_fetch_free(f);
        struct req *all;
        unsigned n = requests(&all);
        *ret_n = n - before;
        *ret_reqs = malloc((*ret_n ? *ret_n : 1) * sizeof(struct req));
        assert_non_null(*ret_reqs);
        memcpy(*ret_reqs, all + before, *ret_n * sizeof(struct req));
        free(all);
        return rc;
}

static void test_small_put_and_dedup(void **state)
{
        static uint8_t data[3 * MiB + 5];
        struct cairn_digest d;
        struct req *r;
        unsigned n;
        bool created = false;
        char hex[CAIRN_DIGEST_HEX_LEN + 1], path[128];
        (void)state;

        fill(data, sizeof(data), 9);
        script_reset();
        assert_int_equal(put_blob(data, sizeof(data), &created, &r, &n, &d), 0);
        assert_true(created);
        cairn_digest_to_hex(&d, hex);
        snprintf(path, sizeof(path), "/bkt/pre/blobs/sha256/%s", hex);
        assert_int_equal(n, 2);
        assert_string_equal(r[0].method, "HEAD");
        assert_string_equal(r[0].target, path);
        assert_string_equal(r[1].method, "PUT");
        assert_string_equal(r[1].target, path);
        assert_int_equal(r[1].body_len, sizeof(data));
        assert_string_equal(r[1].body_sha, hex);
        assert_string_equal(r[1].content_sha, hex); /* the server can check what it stores */
        free(r);

        /* Already there with the same size: only the HEAD. */
        script_reset();
        srv.existing_size = sizeof(data);
        assert_int_equal(put_blob(data, sizeof(data), &created, &r, &n, &d), 0);
        assert_false(created);
        assert_int_equal(n, 1);
        assert_string_equal(r[0].method, "HEAD");
        free(r);

        /* There with another size (a broken object): replaced. */
        script_reset();
        srv.existing_size = 12;
        assert_int_equal(put_blob(data, sizeof(data), &created, &r, &n, &d), 0);
        assert_true(created);
        assert_int_equal(n, 2);
        assert_string_equal(r[1].method, "PUT");
        free(r);

        /* The empty blob. */
        script_reset();
        assert_int_equal(put_blob(data, 0, &created, &r, &n, &d), 0);
        assert_int_equal(n, 2);
        assert_int_equal(r[1].body_len, 0);
        assert_string_equal(r[1].content_sha,
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        free(r);
}

/* Checks a multipart upload of data: parts, their hashes, the completion body. */
static void check_multipart(const uint8_t *data, size_t len, const struct req *r, unsigned n,
                            bool completed)
{
        const size_t part = 5 * MiB;
        unsigned nparts = (unsigned)((len + part - 1) / part), seen = 0;
        bool create = false, complete = false;

        for (unsigned i = 0; i < n; i++) {
                const char *q = strchr(r[i].target, '?');
                if (!strcmp(r[i].method, "POST") && q && !strcmp(q, "?uploads=")) {
                        create = true;
                        assert_string_equal(r[i].content_sha, "e3b0c44298fc1c149afbf4c8996fb924"
                                                              "27ae41e4649b934ca495991b7852b855");
                } else if (!strcmp(r[i].method, "PUT") && q) {
                        unsigned k;
                        char id[64];
                        assert_int_equal(sscanf(q, "?partNumber=%u&uploadId=%63s", &k, id), 2);
                        /* The upload id goes back percent-encoded. */
                        assert_string_equal(id, "up%2F1%2Bx");
                        assert_true(k >= 1 && k <= nparts);
                        size_t off = (size_t)(k - 1) * part;
                        size_t plen = len - off < part ? len - off : part;
                        char hex[CAIRN_DIGEST_HEX_LEN + 1];
                        sha_hex(data + off, plen, hex);
                        assert_int_equal(r[i].body_len, plen);
                        assert_string_equal(r[i].body_sha, hex);
                        assert_string_equal(r[i].content_sha, hex);
                        seen++;
                } else if (!strcmp(r[i].method, "POST") && q) {
                        complete = true;
                        assert_string_equal(q, "?uploadId=up%2F1%2Bx");
                        char want[8192];
                        size_t w = (size_t)snprintf(want, sizeof(want),
                                                    "<CompleteMultipartUpload xmlns=\"http://s3."
                                                    "amazonaws.com/doc/2006-03-01/\">");
                        for (unsigned k = 1; k <= nparts; k++)
                                w += (size_t)snprintf(want + w, sizeof(want) - w,
                                                      "<Part><PartNumber>%u</PartNumber><ETag>"
                                                      "\"etag-%u\"</ETag></Part>",
                                                      k, k);
                        snprintf(want + w, sizeof(want) - w, "</CompleteMultipartUpload>");
                        assert_string_equal(r[i].body, want);
                        char hex[CAIRN_DIGEST_HEX_LEN + 1];
                        sha_hex(want, strlen(want), hex);
                        assert_string_equal(r[i].content_sha, hex);
                }
        }
        assert_true(create);
        assert_int_equal(complete, completed);
        if (completed)
                assert_int_equal(seen, nparts);
}

static void test_multipart(void **state)
{
        const size_t len = 64 * MiB + 12345;
        uint8_t *data = malloc(len);
        struct cairn_digest d, want;
        struct req *r;
        unsigned n;
        bool created = false;
        (void)state;

        assert_non_null(data);
        fill(data, len, 77);
        cairn_sha256(data, len, &want);
        script_reset();
        assert_int_equal(put_blob(data, len, &created, &r, &n, &d), 0);
        assert_true(created);
        assert_true(cairn_digest_equal(&d, &want));
        check_multipart(data, len, r, n, true);
        /* HEAD first (absent), HEAD last (the assembled object has the right size). */
        assert_string_equal(r[0].method, "HEAD");
        assert_string_equal(r[n - 1].method, "HEAD");
        free(r);
        /* Parts go out in parallel, never more than CAIRN_S3_UPLOAD_PARALLEL (3) at once. */
        pthread_mutex_lock(&srv.lock);
        unsigned peak = srv.parts_active_max;
        pthread_mutex_unlock(&srv.lock);
        if (peak < 2 || peak > 3)
                fail_msg("%u parts were in flight at the peak, expected 2 or 3", peak);

        /* The server claims success but the object is short: an error, not "created". */
        script_reset();
        srv.complete_loses_bytes = true;
        assert_int_equal(put_blob(data, len, &created, &r, &n, &d), -EIO);
        free(r);
        free(data);
}

static void test_multipart_failures(void **state)
{
        const size_t len = 64 * MiB + 1;
        uint8_t *data = malloc(len);
        struct cairn_digest d;
        struct req *r;
        unsigned n;
        bool created = false;
        (void)state;

        assert_non_null(data);
        fill(data, len, 78);

        /* A part fails for good: no completion, the upload is aborted. */
        script_reset();
        srv.fail_part = 3;
        assert_true(put_blob(data, len, &created, &r, &n, &d) < 0);
        check_multipart(data, len, r, n, false);
        assert_string_equal(r[n - 1].method, "DELETE");
        assert_non_null(strstr(r[n - 1].target, "?uploadId=up%2F1%2Bx"));
        free(r);

        /* 200 with an <Error> body: a failure (S3 does this), aborted too. */
        script_reset();
        srv.complete_error = true;
        assert_true(put_blob(data, len, &created, &r, &n, &d) < 0);
        check_multipart(data, len, r, n, true);
        assert_string_equal(r[n - 1].method, "DELETE");
        free(r);
        free(data);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_urls),
                cmocka_unit_test(test_keys_and_headers),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_read_blob),
                cmocka_unit_test(test_small_put_and_dedup),
                cmocka_unit_test(test_multipart),
                cmocka_unit_test(test_multipart_failures),
        };
        return cmocka_run_group_tests(tests, server_start, server_stop);
}
