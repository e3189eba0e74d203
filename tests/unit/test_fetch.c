/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fetch engine against an in-process HTTP/1.1 server that misbehaves
 * on request.  The server (a listening thread on 127.0.0.1:0, one thread
 * per connection, keep-alive) serves a deterministic object for every GET
 * path and follows a script per path: the first requests to a path get the
 * scripted behaviours in order (503, 429, a reset or a clean close in the
 * middle of the body, a stall, a wrong Content-Range, a 200 for a range, a
 * body longer than asked, a blackhole, 404, 403 with an S3 error body...),
 * later ones are served normally, or keep getting the last behaviour when
 * the script says so.  Paths under /random/ get a random fault one time in
 * five.
 *
 * The tests check what the caller sees: the right bytes after retries,
 * the right -errno without retrying when retrying cannot help, the S3
 * error code, bounded attempts (counted on the server side), deadlines
 * (measured), connection reuse, many callers on several threads, the
 * asynchronous API, and cancellation of pending requests by _free().
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/fetch.h"

#define KiB              1024u
#define OBJ_SIZE         (1024u * 1024 + 17) /* odd on purpose: ranges end mid-word */
#define STALL_MS         1000u               /* the engine's stall timeout in these tests */
#define MAX_CONNS        1024
#define MAX_SCRIPTS      128
#define SCRIPT_MAX_STEPS 8

/* ---- the misbehaving server ---- */

enum behaviour {
        B_NORMAL,
        B_503,
        B_429,
        B_500,
        B_RESET,         /* half the body, then RST */
        B_TRUNCATE,      /* half the body, then a clean close (Content-Length promised more) */
        B_STALL,         /* a little body, then silence past the stall timeout */
        B_WRONG_RANGE,   /* Content-Range and body shifted by 100 bytes */
        B_FULL_200,      /* ignores Range: 200 with the whole object */
        B_LONG_BODY,     /* right Content-Range, no Content-Length, 100 bytes too many, close */
        B_SHORT_CL,      /* Content-Length one less than the Content-Range says */
        B_CLOSE_SHORT,   /* no Content-Length, half the body, clean close: looks complete */
        B_CHUNKED_SHORT, /* chunked, half the body, then a proper last chunk */
        B_200_RANGE,     /* status 200, yet with the right Content-Range and range body */
        B_ENCODED,       /* the right range, but with a Content-Encoding nobody asked for */
        B_BLACKHOLE,     /* reads the request, never answers */
        B_404,
        B_403_XML,
        B_400_XML,      /* InvalidArgument: a final error */
        B_400_TIMEOUT,  /* S3 RequestTimeout (a 400): retryable */
        B_503_SLOWDOWN, /* S3 SlowDown */
};

struct script {
        char path[128];
        enum behaviour steps[SCRIPT_MAX_STEPS];
        unsigned nsteps;
        bool repeat_last;  /* after the script: keep the last behaviour forever */
        unsigned requests; /* requests seen on this path */
        char last_sign[64];
        uint64_t last_range_start; /* of the last request; UINT64_MAX: it asked no range */
};

struct server {
        int listen_fd;
        uint16_t port;
        pthread_t thread;
        pthread_mutex_t lock;
        bool stopping;                      /* protected by lock */
        int conn_fds[MAX_CONNS];            /* protected by lock */
        pthread_t conn_threads[MAX_CONNS];  /* protected by lock */
        unsigned nconns;                    /* protected by lock: connections accepted */
        struct script scripts[MAX_SCRIPTS]; /* protected by lock */
        unsigned nscripts;                  /* protected by lock */
        unsigned total_requests;            /* protected by lock */
        unsigned blackholed;                /* protected by lock: requests being blackholed */
        uint64_t rng;                       /* protected by lock */
        uint8_t put_body[64 * KiB];         /* protected by lock: last PUT body */
        size_t put_len;                     /* protected by lock */
        unsigned put_requests;              /* protected by lock */
};

static uint8_t object_data[OBJ_SIZE];
static struct server srv;

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* Every path has its own object: the shared data rotated by a hash of the path. */
static size_t path_shift(const char *path)
{
        uint64_t h = 1469598103934665603ull;
        for (const char *p = path; *p; p++)
                h = (h ^ (uint8_t)*p) * 1099511628211ull;
        return (size_t)(h % OBJ_SIZE);
}

static uint8_t object_byte(size_t shift, uint64_t off)
{
        return object_data[(off + shift) % OBJ_SIZE];
}

static void object_copy(const char *path, uint64_t off, size_t len, uint8_t *out)
{
        size_t shift = path_shift(path);
        for (size_t i = 0; i < len; i++)
                out[i] = object_byte(shift, off + i);
}

static bool object_equal(const char *path, uint64_t off, size_t len, const uint8_t *buf)
{
        size_t shift = path_shift(path);
        for (size_t i = 0; i < len; i++)
                if (buf[i] != object_byte(shift, off + i))
                        return false;
        return true;
}

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void script_set(const char *path, bool repeat_last, unsigned n, ...)
{
        va_list ap;
        pthread_mutex_lock(&srv.lock);
        assert_true(srv.nscripts < MAX_SCRIPTS);
        struct script *s = &srv.scripts[srv.nscripts++];
        memset(s, 0, sizeof(*s));
        snprintf(s->path, sizeof(s->path), "%s", path);
        s->repeat_last = repeat_last;
        s->nsteps = n;
        va_start(ap, n);
        for (unsigned i = 0; i < n; i++)
                s->steps[i] = (enum behaviour)va_arg(ap, int);
        va_end(ap);
        pthread_mutex_unlock(&srv.lock);
}

static unsigned script_requests(const char *path)
{
        unsigned n = 0;
        pthread_mutex_lock(&srv.lock);
        for (unsigned i = 0; i < srv.nscripts; i++)
                if (!strcmp(srv.scripts[i].path, path))
                        n = srv.scripts[i].requests;
        pthread_mutex_unlock(&srv.lock);
        return n;
}

static void script_last_sign(const char *path, char *buf, size_t len)
{
        pthread_mutex_lock(&srv.lock);
        buf[0] = '\0';
        for (unsigned i = 0; i < srv.nscripts; i++)
                if (!strcmp(srv.scripts[i].path, path))
                        snprintf(buf, len, "%s", srv.scripts[i].last_sign);
        pthread_mutex_unlock(&srv.lock);
}

static uint64_t script_last_range_start(const char *path)
{
        uint64_t start = UINT64_MAX;
        pthread_mutex_lock(&srv.lock);
        for (unsigned i = 0; i < srv.nscripts; i++)
                if (!strcmp(srv.scripts[i].path, path))
                        start = srv.scripts[i].last_range_start;
        pthread_mutex_unlock(&srv.lock);
        return start;
}

/* Picks the behaviour for this request (and counts it). */
static enum behaviour behaviour_for(const char *path, const char *sign, uint64_t range_start)
{
        enum behaviour b = B_NORMAL;
        pthread_mutex_lock(&srv.lock);
        srv.total_requests++;
        for (unsigned i = 0; i < srv.nscripts; i++) {
                struct script *s = &srv.scripts[i];
                if (strcmp(s->path, path) != 0)
                        continue;
                unsigned k = s->requests++;
                snprintf(s->last_sign, sizeof(s->last_sign), "%s", sign);
                s->last_range_start = range_start;
                if (k < s->nsteps)
                        b = s->steps[k];
                else if (s->repeat_last && s->nsteps)
                        b = s->steps[s->nsteps - 1];
                break;
        }
        if (!strncmp(path, "/random/", 8) && splitmix64(&srv.rng) % 5 == 0) {
                static const enum behaviour faults[] = {
                    B_503,      B_RESET, B_TRUNCATE,    B_WRONG_RANGE,   B_FULL_200, B_LONG_BODY,
                    B_SHORT_CL, B_429,   B_CLOSE_SHORT, B_CHUNKED_SHORT, B_200_RANGE};
                b = faults[splitmix64(&srv.rng) % (sizeof(faults) / sizeof(faults[0]))];
        }
        pthread_mutex_unlock(&srv.lock);
        return b;
}

static bool send_all(int fd, const void *data, size_t len)
{
        const uint8_t *p = data;
        while (len) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                p += n;
                len -= (size_t)n;
        }
        return true;
}

static bool send_object(int fd, const char *path, uint64_t off, uint64_t len)
{
        uint8_t buf[16 * KiB];
        while (len) {
                size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
                object_copy(path, off, n, buf);
                if (!send_all(fd, buf, n))
                        return false;
                off += n;
                len -= n;
        }
        return true;
}

static bool send_text(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool send_text(int fd, const char *fmt, ...)
{
        char buf[2048];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        return n > 0 && (size_t)n < sizeof(buf) && send_all(fd, buf, (size_t)n);
}

static bool send_error(int fd, int status, const char *reason, const char *body)
{
        return send_text(fd,
                         "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         status, reason, strlen(body), body);
}

/* Waits until the peer closes (or ms pass): the server side of stalls and blackholes. */
static void wait_for_close(int fd, int ms)
{
        char buf[4096];
        uint64_t end = now_ms() + (uint64_t)ms;
        for (;;) {
                uint64_t now = now_ms();
                if (now >= end)
                        return;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int r = poll(&p, 1, (int)(end - now < 100 ? end - now : 100));
                pthread_mutex_lock(&srv.lock);
                bool stopping = srv.stopping;
                pthread_mutex_unlock(&srv.lock);
                if (stopping)
                        return;
                if (r > 0 && recv(fd, buf, sizeof(buf), 0) <= 0)
                        return;
        }
}

static void hard_reset(int fd)
{
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

struct http_req {
        char method[16];
        char path[256];
        bool has_range;
        uint64_t range_start, range_end; /* range_end UINT64_MAX: open-ended */
        uint64_t content_length;
        char sign[64];
};

static void header_value(const char *hdrs, const char *name, char *out, size_t len)
{
        size_t nlen = strlen(name);
        out[0] = '\0';
        for (const char *line = hdrs; line && *line; line = strstr(line, "\r\n")) {
                if (line[0] == '\r')
                        line += 2;
                if (!strncasecmp(line, name, nlen) && line[nlen] == ':') {
                        const char *v = line + nlen + 1;
                        while (*v == ' ')
                                v++;
                        size_t vl = strcspn(v, "\r\n");
                        if (vl >= len)
                                vl = len - 1;
                        memcpy(out, v, vl);
                        out[vl] = '\0';
                        return;
                }
        }
}

/* Reads one request's head (and a PUT body).  False when the connection is done. */
static bool read_request(int fd, char *buf, size_t cap, size_t *have, struct http_req *rq)
{
        char *end;
        while (!(end = memmem(buf, *have, "\r\n\r\n", 4))) {
                if (*have + 1 >= cap)
                        return false;
                ssize_t n = recv(fd, buf + *have, cap - 1 - *have, 0);
                if (n <= 0)
                        return false;
                *have += (size_t)n;
        }
        *end = '\0';
        memset(rq, 0, sizeof(*rq));
        if (sscanf(buf, "%15s %255s", rq->method, rq->path) != 2)
                return false;
        char v[128];
        header_value(buf, "Range", v, sizeof(v));
        unsigned long long a, b;
        if (sscanf(v, "bytes=%llu-%llu", &a, &b) == 2) {
                rq->has_range = true;
                rq->range_start = a;
                rq->range_end = b;
        } else if (sscanf(v, "bytes=%llu-", &a) == 1) {
                rq->has_range = true;
                rq->range_start = a;
                rq->range_end = UINT64_MAX;
        }
        header_value(buf, "Content-Length", v, sizeof(v));
        rq->content_length = strtoull(v, NULL, 10);
        header_value(buf, "X-Test-Sign", rq->sign, sizeof(rq->sign));
        size_t head = (size_t)(end + 4 - buf);
        memmove(buf, buf + head, *have - head);
        *have -= head;
        if (rq->content_length) {
                pthread_mutex_lock(&srv.lock);
                srv.put_len = 0;
                pthread_mutex_unlock(&srv.lock);
                uint64_t left = rq->content_length;
                while (left) {
                        if (!*have) {
                                ssize_t n = recv(fd, buf, cap - 1, 0);
                                if (n <= 0)
                                        return false;
                                *have = (size_t)n;
                        }
                        size_t take = *have < left ? *have : (size_t)left;
                        pthread_mutex_lock(&srv.lock);
                        size_t room = sizeof(srv.put_body) - srv.put_len;
                        size_t keep = take < room ? take : room;
                        memcpy(srv.put_body + srv.put_len, buf, keep);
                        srv.put_len += keep;
                        pthread_mutex_unlock(&srv.lock);
                        memmove(buf, buf + take, *have - take);
                        *have -= take;
                        left -= take;
                }
        }
        return true;
}

static const char xml_403[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied"
    "</Code><Message>Access Denied</Message><RequestId>1</RequestId>"
    "</Error>";
static const char xml_400[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                              "InvalidArgument</Code><Message>Bad argument</Message></Error>";
static const char xml_400_timeout[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                                      "RequestTimeout</Code><Message>Your socket connection to "
                                      "the server was not read from or written to within the "
                                      "timeout period.</Message></Error>";
static const char xml_slowdown[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                                   "SlowDown</Code><Message>Please reduce your request rate."
                                   "</Message></Error>";

/* Serves one request; false when the connection must end. */
static bool serve(int fd, const struct http_req *rq)
{
        enum behaviour b =
            behaviour_for(rq->path, rq->sign, rq->has_range ? rq->range_start : UINT64_MAX);
        uint64_t start = 0, end = OBJ_SIZE - 1;
        bool head = !strcmp(rq->method, "HEAD");

        if (!strcmp(rq->method, "PUT") || !strcmp(rq->method, "POST")) {
                pthread_mutex_lock(&srv.lock);
                srv.put_requests++;
                pthread_mutex_unlock(&srv.lock);
                if (b == B_503)
                        return send_error(fd, 503, "Service Unavailable", "");
                return send_text(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        if (rq->has_range) {
                start = rq->range_start;
                if (rq->range_end != UINT64_MAX && rq->range_end < end)
                        end = rq->range_end;
                if (start >= OBJ_SIZE)
                        return send_text(fd,
                                         "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: "
                                         "bytes */%u\r\nContent-Length: 0\r\n\r\n",
                                         OBJ_SIZE);
        }
        uint64_t len = end - start + 1;
        const char *status = rq->has_range ? "206 Partial Content" : "200 OK";
        char crange[96] = "";
        if (rq->has_range)
                snprintf(crange, sizeof(crange), "Content-Range: bytes %llu-%llu/%u\r\n",
                         (unsigned long long)start, (unsigned long long)end, OBJ_SIZE);

        switch (b) {
        case B_NORMAL:
                if (!send_text(fd, "HTTP/1.1 %s\r\n%sContent-Length: %llu\r\nETag: \"abc\"\r\n\r\n",
                               status, crange, (unsigned long long)len))
                        return false;
                return head || send_object(fd, rq->path, start, len);
        case B_503:
                return send_error(fd, 503, "Service Unavailable", "busy");
        case B_429:
                return send_text(fd, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\n"
                                     "Content-Length: 0\r\n\r\n");
        case B_500:
                return send_error(fd, 500, "Internal Server Error", "");
        case B_503_SLOWDOWN:
                return send_error(fd, 503, "Slow Down", xml_slowdown);
        case B_400_TIMEOUT:
                return send_error(fd, 400, "Bad Request", xml_400_timeout);
        case B_400_XML:
                return send_error(fd, 400, "Bad Request", xml_400);
        case B_404:
                return send_error(fd, 404, "Not Found", "<html>not found</html>");
        case B_403_XML:
                return send_error(fd, 403, "Forbidden", xml_403);
        case B_RESET:
        case B_TRUNCATE:
                send_text(fd, "HTTP/1.1 %s\r\n%sContent-Length: %llu\r\n\r\n", status, crange,
                          (unsigned long long)len);
                send_object(fd, rq->path, start, len / 2);
                if (b == B_RESET)
                        hard_reset(fd);
                return false;
        case B_STALL:
                send_text(fd, "HTTP/1.1 %s\r\n%sContent-Length: %llu\r\n\r\n", status, crange,
                          (unsigned long long)len);
                send_object(fd, rq->path, start, len < 100 ? len / 2 : 100);
                wait_for_close(fd, (int)(STALL_MS * 3));
                return false;
        case B_WRONG_RANGE: {
                uint64_t s2 = start + 100 < OBJ_SIZE ? start + 100 : 0;
                uint64_t e2 = s2 + len - 1 < OBJ_SIZE ? s2 + len - 1 : OBJ_SIZE - 1;
                send_text(fd,
                          "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %llu-%llu/%u\r\n"
                          "Content-Length: %llu\r\n\r\n",
                          (unsigned long long)s2, (unsigned long long)e2, OBJ_SIZE,
                          (unsigned long long)(e2 - s2 + 1));
                return send_object(fd, rq->path, s2, e2 - s2 + 1);
        }
        case B_FULL_200:
                if (!send_text(fd, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", OBJ_SIZE))
                        return false;
                return send_object(fd, rq->path, 0, OBJ_SIZE);
        case B_LONG_BODY:
                send_text(fd, "HTTP/1.1 %s\r\n%sConnection: close\r\n\r\n", status, crange);
                send_object(fd, rq->path, start, len);
                send_all(fd,
                         "0123456789012345678901234567890123456789012345678901234567890123456789"
                         "012345678901234567890123456789",
                         100);
                return false;
        case B_CLOSE_SHORT:
                send_text(fd, "HTTP/1.1 %s\r\n%sConnection: close\r\n\r\n", status, crange);
                send_object(fd, rq->path, start, len / 2);
                return false;
        case B_CHUNKED_SHORT:
                if (!send_text(fd, "HTTP/1.1 %s\r\n%sTransfer-Encoding: chunked\r\n\r\n%llx\r\n",
                               status, crange, (unsigned long long)(len / 2)) ||
                    !send_object(fd, rq->path, start, len / 2))
                        return false;
                return send_text(fd, "\r\n0\r\n\r\n");
        case B_ENCODED:
                if (!send_text(
                        fd,
                        "HTTP/1.1 %s\r\n%sContent-Encoding: gzip\r\nContent-Length: %llu\r\n\r\n",
                        status, crange, (unsigned long long)len))
                        return false;
                return send_object(fd, rq->path, start, len);
        case B_200_RANGE:
                if (!send_text(fd, "HTTP/1.1 200 OK\r\n%sContent-Length: %llu\r\n\r\n", crange,
                               (unsigned long long)len))
                        return false;
                return send_object(fd, rq->path, start, len);
        case B_SHORT_CL:
                send_text(fd, "HTTP/1.1 %s\r\n%sContent-Length: %llu\r\n\r\n", status, crange,
                          (unsigned long long)(len - 1));
                send_object(fd, rq->path, start, len - 1);
                return rq->has_range; /* without a range the length is the truth: keep going */
        case B_BLACKHOLE:
                pthread_mutex_lock(&srv.lock);
                srv.blackholed++;
                pthread_mutex_unlock(&srv.lock);
                wait_for_close(fd, 60 * 1000);
                pthread_mutex_lock(&srv.lock);
                srv.blackholed--;
                pthread_mutex_unlock(&srv.lock);
                return false;
        }
        return false;
}

static void *conn_thread(void *arg)
{
        unsigned idx = (unsigned)(uintptr_t)arg;
        pthread_mutex_lock(&srv.lock);
        int fd = srv.conn_fds[idx];
        pthread_mutex_unlock(&srv.lock);
        char *buf = malloc(64 * KiB);
        size_t have = 0;
        struct http_req rq;
        if (buf)
                while (read_request(fd, buf, 64 * KiB, &have, &rq) && serve(fd, &rq))
                        ;
        free(buf);
        /* Closed under the lock, so that server_stop never shuts down a reused fd number. */
        pthread_mutex_lock(&srv.lock);
        close(fd);
        srv.conn_fds[idx] = -1;
        pthread_mutex_unlock(&srv.lock);
        return NULL;
}

static void *accept_thread(void *arg)
{
        (void)arg;
        for (;;) {
                int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        return NULL;
                }
                pthread_mutex_lock(&srv.lock);
                if (srv.stopping || srv.nconns >= MAX_CONNS) {
                        pthread_mutex_unlock(&srv.lock);
                        close(fd);
                        continue;
                }
                unsigned i = srv.nconns;
                srv.conn_fds[i] = fd;
                if (pthread_create(&srv.conn_threads[i], NULL, conn_thread, (void *)(uintptr_t)i)) {
                        close(fd);
                } else {
                        srv.nconns++;
                }
                pthread_mutex_unlock(&srv.lock);
        }
}

static unsigned server_connections(void)
{
        pthread_mutex_lock(&srv.lock);
        unsigned n = srv.nconns;
        pthread_mutex_unlock(&srv.lock);
        return n;
}

static int server_start(void **state)
{
        (void)state;
        uint64_t st = 42;
        for (size_t i = 0; i < OBJ_SIZE; i++)
                object_data[i] = (uint8_t)splitmix64(&st);
        memset(&srv, 0, sizeof(srv));
        srv.rng = 7;
        pthread_mutex_init(&srv.lock, NULL);
        srv.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (srv.listen_fd < 0)
                return -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        if (bind(srv.listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            listen(srv.listen_fd, 128) < 0 ||
            getsockname(srv.listen_fd, (struct sockaddr *)&a, &alen) < 0)
                return -1;
        srv.port = ntohs(a.sin_port);
        return pthread_create(&srv.thread, NULL, accept_thread, NULL) ? -1 : 0;
}

static int server_stop(void **state)
{
        (void)state;
        pthread_mutex_lock(&srv.lock);
        srv.stopping = true;
        pthread_mutex_unlock(&srv.lock);
        shutdown(srv.listen_fd, SHUT_RDWR);
        pthread_join(srv.thread, NULL);
        close(srv.listen_fd);
        pthread_mutex_lock(&srv.lock);
        for (unsigned i = 0; i < srv.nconns; i++)
                if (srv.conn_fds[i] >= 0)
                        shutdown(srv.conn_fds[i], SHUT_RDWR);
        unsigned n = srv.nconns;
        pthread_mutex_unlock(&srv.lock);
        for (unsigned i = 0; i < n; i++)
                pthread_join(srv.conn_threads[i], NULL);
        pthread_mutex_destroy(&srv.lock);
        return 0;
}

/* ---- helpers ---- */

static void url_for(const char *path, char *buf, size_t len)
{
        snprintf(buf, len, "http://127.0.0.1:%u%s", srv.port, path);
}

static struct cairn_fetch *engine(unsigned max_attempts, unsigned deadline_ms)
{
        struct cairn_fetch_options o = {
            .max_connections = 4,
            .max_attempts = max_attempts,
            .deadline_ms = deadline_ms,
            .connect_timeout_ms = 1000,
            .stall_timeout_ms = STALL_MS,
            .backoff_base_ms = 5,
            .backoff_max_ms = 40,
        };
        struct cairn_fetch *f = NULL;
        assert_int_equal(cairn_fetch_new(&o, &f), 0);
        assert_non_null(f);
        return f;
}

static struct cairn_fetch_request get_range(const char *url, uint64_t off, uint64_t len, void *buf)
{
        return (struct cairn_fetch_request){.method = "GET",
                                            .url = url,
                                            .range_offset = off,
                                            .range_len = len,
                                            .out = buf,
                                            .out_cap = len,
                                            .out_fd = -1};
}

/* One ranged read through path; returns the engine's result, checks the bytes on success. */
static int read_range(struct cairn_fetch *f, const char *path, uint64_t off, uint64_t len,
                      struct cairn_fetch_response *resp)
{
        char url[256];
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        memset(buf, 0xa5, len);
        url_for(path, url, sizeof(url));
        struct cairn_fetch_request q = get_range(url, off, len, buf);
        int r = cairn_fetch_do(f, &q, resp);
        if (r == 0) {
                assert_int_equal(resp->body_len, len);
                if (!object_equal(path, off, len, buf))
                        fail_msg("wrong bytes from '%s' at %llu+%llu", path,
                                 (unsigned long long)off, (unsigned long long)len);
        }
        free(buf);
        return r;
}

/* Sockets of this process that a program it runs would inherit. */
static unsigned inheritable_sockets(void)
{
        unsigned n = 0;
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        assert_non_null(d);
        while ((de = readdir(d))) {
                struct stat st;
                int fd = atoi(de->d_name);
                if (de->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) < 0)
                        continue;
                if (S_ISSOCK(st.st_mode) && !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
                        n++;
        }
        closedir(d);
        return n;
}

/* ---- tests ---- */

static void test_ranges_and_reuse(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        struct cairn_fetch_response resp;
        unsigned conns = server_connections();
        /* libcurl's own wake-up socket pair is inheritable (curl 7.88); ours must not be. */
        unsigned inheritable = inheritable_sockets();
        static const uint64_t cases[][2] = {
            {0, 1},        {0, 4096},          {1, 100}, {OBJ_SIZE - 1, 1}, {12345, 300 * KiB},
            {0, OBJ_SIZE}, {OBJ_SIZE - 17, 17}};
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                assert_int_equal(read_range(f, "/plain/a", cases[i][0], cases[i][1], &resp), 0);
                assert_int_equal(resp.status, 206);
                assert_int_equal(resp.attempts, 1);
                assert_int_equal(resp.total_size, OBJ_SIZE);
                assert_string_equal(resp.etag, "\"abc\"");
                assert_string_equal(resp.error_code, "");
        }
        /* Sequential requests to one host share one kept-alive connection... */
        assert_int_equal(server_connections(), conns + 1);
        /* ...which a program we run would not inherit. */
        assert_int_equal(inheritable_sockets(), inheritable);

        /* A whole object into a buffer, then its size by HEAD. */
        char url[256];
        uint8_t *buf = malloc(OBJ_SIZE);
        assert_non_null(buf);
        url_for("/plain/whole", url, sizeof(url));
        struct cairn_fetch_request q = {
            .method = "GET", .url = url, .out = buf, .out_cap = OBJ_SIZE, .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.body_len, OBJ_SIZE);
        assert_int_equal(resp.content_length, OBJ_SIZE);
        assert_true(object_equal("/plain/whole", 0, OBJ_SIZE, buf));
        struct cairn_fetch_request h = {.method = "HEAD", .url = url, .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &h, &resp), 0);
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.content_length, OBJ_SIZE);
        assert_int_equal(resp.body_len, 0);

        /* Too small a buffer for an unranged body: -EFBIG at once, no retry. */
        q.out_cap = 1000;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -EFBIG);
        assert_int_equal(resp.attempts, 1);
        free(buf);

        /* A range past the end is a final error, not something to retry. */
        assert_int_equal(read_range(f, "/plain/a", OBJ_SIZE, 10, &resp), -EIO);
        assert_int_equal(resp.status, 416);
        assert_int_equal(resp.attempts, 1);
        cairn_fetch_free(f);
}

static void test_invalid_requests(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        char url[256], buf[16];
        url_for("/plain/x", url, sizeof(url));
        struct cairn_fetch_request q = get_range(url, 0, 100, buf);
        q.out_cap = sizeof(buf); /* smaller than the range */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q = get_range(url, UINT64_MAX - 5, 10, NULL);
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q = get_range(url, 0, 10, buf);
        q.method = "HEAD";
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.method = "PATCH";
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.method = "GET";
        q.url = NULL;
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        /* A header that would smuggle another one in never reaches the wire. */
        static const char *const bad_headers[] = {"X-A: 1\r\nX-B: 2", NULL};
        q = get_range(url, 0, 10, buf);
        q.headers = bad_headers;
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        cairn_fetch_free(f);
}

struct fault_case {
        const char *path;
        enum behaviour b;
};

/* Each fault once, then a good answer: the caller sees only the right bytes. */
static void test_retry_each_fault(void **state)
{
        (void)state;
        static const struct fault_case cases[] = {
            {"/f/503", B_503},
            {"/f/429", B_429},
            {"/f/500", B_500},
            {"/f/reset", B_RESET},
            {"/f/truncate", B_TRUNCATE},
            {"/f/stall", B_STALL},
            {"/f/wrong-range", B_WRONG_RANGE},
            {"/f/full-200", B_FULL_200},
            {"/f/long-body", B_LONG_BODY},
            {"/f/short-cl", B_SHORT_CL},
            {"/f/slowdown", B_503_SLOWDOWN},
            {"/f/request-timeout", B_400_TIMEOUT},
            {"/f/close-short", B_CLOSE_SHORT},
            {"/f/chunked-short", B_CHUNKED_SHORT},
            {"/f/200-range", B_200_RANGE},
            {"/f/encoded", B_ENCODED},
        };
        struct cairn_fetch *f = engine(4, 10000);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct cairn_fetch_response resp;
                script_set(cases[i].path, false, 1, cases[i].b);
                uint64_t t0 = now_ms();
                int r = read_range(f, cases[i].path, 1000, 200 * KiB, &resp);
                if (r != 0)
                        fail_msg("'%s': %s", cases[i].path, strerror(-r));
                /*
                 * A reset can reach the client before any of the half body it
                 * follows (a RST drops what the socket had not delivered yet);
                 * libcurl then redoes the request on a fresh connection itself,
                 * inside our single attempt.  The server still sees exactly the
                 * faulty request and one good one.
                 */
                if (cases[i].b == B_RESET)
                        assert_true(resp.attempts == 1 || resp.attempts == 2);
                else
                        assert_int_equal(resp.attempts, 2);
                assert_int_equal(script_requests(cases[i].path), 2);
                assert_int_equal(resp.status, 206);
                /* Only the stall may take about the stall timeout; the rest retry at once. */
                uint64_t took = now_ms() - t0;
                if (cases[i].b == B_STALL)
                        assert_true(took >= STALL_MS - 100 && took < STALL_MS + 2500);
                else
                        assert_true(took < 1000);
        }
        /* Two different faults in a row, then success. */
        script_set("/f/two", false, 2, B_RESET, B_WRONG_RANGE);
        struct cairn_fetch_response resp;
        assert_int_equal(read_range(f, "/f/two", 0, 64 * KiB, &resp), 0);
        assert_int_equal(resp.attempts, 3);
        cairn_fetch_free(f);
}

static void test_final_errors(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        struct cairn_fetch_response resp;

        script_set("/e/404", true, 1, B_404);
        assert_int_equal(read_range(f, "/e/404", 0, 10, &resp), -ENOENT);
        assert_int_equal(resp.status, 404);
        assert_int_equal(resp.attempts, 1);
        assert_int_equal(script_requests("/e/404"), 1);
        assert_string_equal(resp.error_code, ""); /* an HTML body is no S3 error */

        script_set("/e/403", true, 1, B_403_XML);
        assert_int_equal(read_range(f, "/e/403", 0, 10, &resp), -EACCES);
        assert_int_equal(resp.status, 403);
        assert_int_equal(resp.attempts, 1);
        assert_int_equal(script_requests("/e/403"), 1);
        assert_string_equal(resp.error_code, "AccessDenied");
        assert_string_equal(resp.error_message, "Access Denied");

        script_set("/e/400", true, 1, B_400_XML);
        assert_int_equal(read_range(f, "/e/400", 0, 10, &resp), -EIO);
        assert_int_equal(resp.attempts, 1);
        assert_string_equal(resp.error_code, "InvalidArgument");

        /* HEAD of a missing object: -ENOENT without a body to parse. */
        char url[256];
        url_for("/e/404", url, sizeof(url));
        struct cairn_fetch_request h = {.method = "HEAD", .url = url, .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &h, &resp), -ENOENT);

        /* Nobody listening: connection refused is retried, then -EIO. */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
        close(s); /* the port is free now, and nothing listens on it */
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/x", ntohs(a.sin_port));
        char buf[10];
        struct cairn_fetch_request q = get_range(url, 0, 10, buf);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -EIO);
        assert_int_equal(resp.attempts, 4);
        assert_int_equal(resp.status, 0);
        cairn_fetch_free(f);
}

static void test_bounded_attempts(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(3, 10000);
        struct cairn_fetch_response resp;
        script_set("/b/always-503", true, 1, B_503);
        assert_int_equal(read_range(f, "/b/always-503", 0, 100, &resp), -EIO);
        assert_int_equal(resp.attempts, 3);
        assert_int_equal(resp.status, 503);
        assert_int_equal(script_requests("/b/always-503"), 3);

        script_set("/b/always-wrong", true, 1, B_WRONG_RANGE);
        assert_int_equal(read_range(f, "/b/always-wrong", 0, 100, &resp), -EIO);
        assert_int_equal(script_requests("/b/always-wrong"), 3);

        script_set("/b/always-200", true, 1, B_FULL_200);
        assert_int_equal(read_range(f, "/b/always-200", 0, 100, &resp), -EIO);
        assert_int_equal(script_requests("/b/always-200"), 3);
        cairn_fetch_free(f);
}

static void test_deadline(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(100, 10000);
        struct cairn_fetch_response resp;
        char url[256], buf[100];

        /* A server that accepts and never answers: -ETIMEDOUT at the deadline, not later. */
        script_set("/d/blackhole", true, 1, B_BLACKHOLE);
        url_for("/d/blackhole", url, sizeof(url));
        struct cairn_fetch_request q = get_range(url, 0, sizeof(buf), buf);
        uint64_t t0 = now_ms();
        q.deadline_ns = cairn_fetch_now_ns() + 1500ull * 1000 * 1000;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -ETIMEDOUT);
        uint64_t took = now_ms() - t0;
        if (took < 1400 || took > 1800)
                fail_msg("blackhole read took %llu ms for a 1500 ms deadline",
                         (unsigned long long)took);
        /* The stall timeout (1 s) cut the first attempt, the deadline the second. */
        assert_int_equal(resp.attempts, 2);

        /* The engine's default deadline applies when the request has none. */
        struct cairn_fetch *f2 = engine(100, 700);
        q.deadline_ns = 0;
        t0 = now_ms();
        assert_int_equal(cairn_fetch_do(f2, &q, &resp), -ETIMEDOUT);
        took = now_ms() - t0;
        if (took < 600 || took > 1000)
                fail_msg("default deadline: %llu ms for 700", (unsigned long long)took);
        cairn_fetch_free(f2);

        /* A server that keeps failing: backoff never carries a request past its deadline. */
        script_set("/d/always-503", true, 1, B_503);
        url_for("/d/always-503", url, sizeof(url));
        q = get_range(url, 0, sizeof(buf), buf);
        t0 = now_ms();
        q.deadline_ns = cairn_fetch_now_ns() + 600ull * 1000 * 1000;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -ETIMEDOUT);
        took = now_ms() - t0;
        if (took > 700)
                fail_msg("failing server: %llu ms for a 600 ms deadline", (unsigned long long)took);
        assert_true(resp.attempts > 3);

        /* Already past: fails at once. */
        q.deadline_ns = cairn_fetch_now_ns() - 1;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -ETIMEDOUT);
        cairn_fetch_free(f);
}

struct hole_reader {
        struct cairn_fetch *fetch;
        uint64_t deadline_ns;
        int result;
        uint64_t took_ms;
};

static void *hole_reader_main(void *arg)
{
        struct hole_reader *h = arg;
        char url[256], buf[100];
        url_for("/d/many-holes", url, sizeof(url));
        struct cairn_fetch_request q = get_range(url, 0, sizeof(buf), buf);
        q.deadline_ns = h->deadline_ns;
        uint64_t t0 = now_ms();
        h->result = cairn_fetch_do(h->fetch, &q, NULL);
        h->took_ms = now_ms() - t0;
        return NULL;
}

/* More blackholed readers than connections: those queued behind the host limit keep the deadline.
 */
static void test_deadline_many(void **state)
{
        (void)state;
        enum { N = 16 };
        struct cairn_fetch *f = engine(100, 10000); /* at most 4 connections */
        struct hole_reader h[N];
        pthread_t t[N];
        script_set("/d/many-holes", true, 1, B_BLACKHOLE);
        uint64_t deadline = cairn_fetch_now_ns() + 1500ull * 1000 * 1000;
        for (int i = 0; i < N; i++) {
                h[i] = (struct hole_reader){.fetch = f, .deadline_ns = deadline, .result = 1};
                assert_int_equal(pthread_create(&t[i], NULL, hole_reader_main, &h[i]), 0);
        }
        for (int i = 0; i < N; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(h[i].result, -ETIMEDOUT);
                if (h[i].took_ms > 1900)
                        fail_msg("reader %d: %llu ms for a 1500 ms deadline", i,
                                 (unsigned long long)h[i].took_ms);
        }
        cairn_fetch_free(f);
}

static void test_stream_to_fd(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        struct cairn_fetch_response resp;
        char url[256];
        int fd = memfd_create("test-fetch", MFD_CLOEXEC);
        assert_true(fd >= 0);

        /* A reset in the middle: the next attempt resumes, the file is whole and right. */
        script_set("/s/obj", false, 2, B_RESET, B_TRUNCATE);
        url_for("/s/obj", url, sizeof(url));
        struct cairn_fetch_request q = {
            .method = "GET", .url = url, .out_fd = fd, .out_fd_cap = OBJ_SIZE};
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.body_len, OBJ_SIZE);
        assert_int_equal(resp.attempts, 3);
        uint8_t *map = mmap(NULL, OBJ_SIZE, PROT_READ, MAP_SHARED, fd, 0);
        assert_true(map != MAP_FAILED);
        assert_int_equal(lseek(fd, 0, SEEK_END), OBJ_SIZE);
        assert_true(object_equal("/s/obj", 0, OBJ_SIZE, map));
        munmap(map, OBJ_SIZE);

        /* Over the cap: -EFBIG from the announced length, nothing retried. */
        assert_int_equal(ftruncate(fd, 0), 0);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        q.out_fd_cap = OBJ_SIZE - 1;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -EFBIG);
        assert_int_equal(resp.attempts, 1);
        close(fd);
        cairn_fetch_free(f);
}

static unsigned sign_calls;

static int test_sign(void *ctx, const struct cairn_fetch_request *req, char headers[][512],
                     unsigned *ret_nheaders)
{
        (void)req;
        unsigned *calls = ctx;
        (*calls)++;
        snprintf(headers[0], 512, "X-Test-Sign: attempt-%u", *calls);
        *ret_nheaders = 1;
        return 0;
}

static int test_sign_fail(void *ctx, const struct cairn_fetch_request *req, char headers[][512],
                          unsigned *ret_nheaders)
{
        (void)ctx;
        (void)req;
        (void)headers;
        (void)ret_nheaders;
        return -ENOKEY;
}

static void test_put_and_sign(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        struct cairn_fetch_response resp;
        char url[256];
        uint8_t body[40000];
        object_copy("/put/x", 0, sizeof(body), body);

        /* The body is sent again on the retry, and the signer runs per attempt. */
        script_set("/put/x", false, 1, B_503);
        url_for("/put/x", url, sizeof(url));
        sign_calls = 0;
        struct cairn_fetch_request q = {.method = "PUT",
                                        .url = url,
                                        .body = body,
                                        .body_len = sizeof(body),
                                        .out_fd = -1,
                                        .sign = test_sign,
                                        .sign_ctx = &sign_calls};
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.attempts, 2);
        assert_int_equal(sign_calls, 2);
        char last[64];
        script_last_sign("/put/x", last, sizeof(last));
        assert_string_equal(last, "attempt-2");
        pthread_mutex_lock(&srv.lock);
        assert_int_equal(srv.put_len, sizeof(body));
        assert_memory_equal(srv.put_body, body, sizeof(body));
        pthread_mutex_unlock(&srv.lock);

        /* A signer's failure fails the request with its error, before anything is sent. */
        q.sign = test_sign_fail;
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -ENOKEY);
        cairn_fetch_free(f);
}

/* ---- many callers ---- */

#define THREADS          8
#define READS_PER_THREAD 40

struct worker {
        struct cairn_fetch *fetch;
        unsigned id;
        unsigned failures;
        unsigned wrong;
};

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        uint64_t st = 1000 + w->id;
        uint8_t *buf = malloc(256 * KiB);
        if (!buf) {
                w->failures++;
                return NULL;
        }
        for (unsigned i = 0; i < READS_PER_THREAD; i++) {
                char path[64], url[256];
                snprintf(path, sizeof(path), "/random/obj%u", (unsigned)(splitmix64(&st) % 5));
                url_for(path, url, sizeof(url));
                uint64_t len = splitmix64(&st) % (256 * KiB) + 1;
                uint64_t off = splitmix64(&st) % (OBJ_SIZE - len + 1);
                struct cairn_fetch_request q = get_range(url, off, len, buf);
                struct cairn_fetch_response resp;
                if (cairn_fetch_do(w->fetch, &q, &resp) != 0)
                        w->failures++;
                else if (resp.body_len != len || !object_equal(path, off, len, buf))
                        w->wrong++;
        }
        free(buf);
        return NULL;
}

static void test_concurrent_callers(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(10, 20000);
        struct worker w[THREADS];
        pthread_t t[THREADS];
        unsigned conns = server_connections();
        pthread_mutex_lock(&srv.lock);
        unsigned before = srv.total_requests;
        pthread_mutex_unlock(&srv.lock);
        for (unsigned i = 0; i < THREADS; i++) {
                w[i] = (struct worker){.fetch = f, .id = i};
                assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
        }
        for (unsigned i = 0; i < THREADS; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(w[i].failures, 0);
                assert_int_equal(w[i].wrong, 0);
        }
        pthread_mutex_lock(&srv.lock);
        unsigned requests = srv.total_requests - before;
        pthread_mutex_unlock(&srv.lock);
        /* One fault in five was injected, so there were retries... */
        assert_true(requests > THREADS * READS_PER_THREAD);
        /* ...and connections were reused, within the per-host limit apart from faulted ones. */
        assert_true(server_connections() - conns < requests);
        cairn_fetch_free(f);
}

/* ---- the asynchronous API ---- */

#define ASYNC_N 64

struct async_state {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned done;           /* protected by lock */
        unsigned ok;             /* protected by lock */
        int results[ASYNC_N];    /* protected by lock */
        unsigned calls[ASYNC_N]; /* protected by lock */
};

struct async_req {
        struct async_state *as;
        unsigned idx;
        char url[256];
        char path[64];
        uint64_t off, len;
        uint8_t buf[32 * KiB];
        struct cairn_fetch_request q;
};

static void async_done(void *ctx, int result, const struct cairn_fetch_response *resp)
{
        struct async_req *ar = ctx;
        struct async_state *as = ar->as;
        bool good = result == 0 && resp->body_len == ar->len &&
                    object_equal(ar->path, ar->off, ar->len, ar->buf);
        pthread_mutex_lock(&as->lock);
        as->results[ar->idx] = result;
        as->calls[ar->idx]++;
        as->done++;
        if (good)
                as->ok++;
        pthread_cond_broadcast(&as->cond);
        pthread_mutex_unlock(&as->lock);
}

static void async_init(struct async_state *as)
{
        memset(as, 0, sizeof(*as));
        pthread_mutex_init(&as->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&as->cond, &ca);
        pthread_condattr_destroy(&ca);
}

/* Waits (bounded: a hang is a failure, not a stuck test) until n callbacks ran. */
static bool async_wait(struct async_state *as, unsigned n, unsigned ms)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long)(ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&as->lock);
        while (as->done < n)
                if (pthread_cond_timedwait(&as->cond, &as->lock, &ts) == ETIMEDOUT)
                        break;
        bool all = as->done >= n;
        pthread_mutex_unlock(&as->lock);
        return all;
}

static void async_destroy(struct async_state *as)
{
        pthread_cond_destroy(&as->cond);
        pthread_mutex_destroy(&as->lock);
}

static void test_async_submit(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(10, 20000);
        struct async_state as;
        struct async_req *reqs = calloc(ASYNC_N, sizeof(*reqs));
        assert_non_null(reqs);
        async_init(&as);
        uint64_t st = 99;
        for (unsigned i = 0; i < ASYNC_N; i++) {
                struct async_req *ar = &reqs[i];
                ar->as = &as;
                ar->idx = i;
                snprintf(ar->path, sizeof(ar->path), "/random/async%u", i % 7);
                url_for(ar->path, ar->url, sizeof(ar->url));
                ar->len = splitmix64(&st) % sizeof(ar->buf) + 1;
                ar->off = splitmix64(&st) % (OBJ_SIZE - ar->len + 1);
                ar->q = get_range(ar->url, ar->off, ar->len, ar->buf);
                assert_int_equal(cairn_fetch_submit(f, &ar->q, async_done, ar), 0);
        }
        assert_true(async_wait(&as, ASYNC_N, 20000));
        pthread_mutex_lock(&as.lock);
        assert_int_equal(as.ok, ASYNC_N);
        for (unsigned i = 0; i < ASYNC_N; i++)
                assert_int_equal(as.calls[i], 1);
        pthread_mutex_unlock(&as.lock);
        /* Arguments are checked at submission: no callback for a refused request. */
        struct cairn_fetch_request bad = get_range(reqs[0].url, 0, 0, NULL);
        bad.method = "BREW";
        assert_int_equal(cairn_fetch_submit(f, &bad, async_done, &reqs[0]), -EINVAL);
        cairn_fetch_free(f);
        pthread_mutex_lock(&as.lock);
        assert_int_equal(as.done, ASYNC_N);
        pthread_mutex_unlock(&as.lock);
        async_destroy(&as);
        free(reqs);
}

struct sync_caller {
        struct cairn_fetch *fetch;
        const char *url;
        int result;
};

static void *sync_caller_main(void *arg)
{
        struct sync_caller *c = arg;
        char buf[100];
        struct cairn_fetch_request q = get_range(c->url, 0, sizeof(buf), buf);
        q.deadline_ns = cairn_fetch_now_ns() + 60ull * 1000 * 1000 * 1000;
        c->result = cairn_fetch_do(c->fetch, &q, NULL);
        return NULL;
}

/* _free() with requests in flight: each completes with -ECANCELED, at once. */
static void test_free_cancels(void **state)
{
        (void)state;
        /* Long backoffs, so that the failing requests are waiting in backoff at _free(). */
        struct cairn_fetch_options o = {.max_connections = 4,
                                        .max_attempts = 100,
                                        .deadline_ms = 60000,
                                        .stall_timeout_ms = 5000,
                                        .backoff_base_ms = 5000,
                                        .backoff_max_ms = 10000};
        struct cairn_fetch *f = NULL;
        assert_int_equal(cairn_fetch_new(&o, &f), 0);
        struct async_state as;
        struct async_req *reqs = calloc(6, sizeof(*reqs));
        assert_non_null(reqs);
        async_init(&as);
        script_set("/c/blackhole", true, 1, B_BLACKHOLE);
        script_set("/c/backoff", true, 1, B_503);
        pthread_mutex_lock(&srv.lock);
        unsigned holes_before = srv.blackholed;
        pthread_mutex_unlock(&srv.lock);
        for (unsigned i = 0; i < 6; i++) {
                struct async_req *ar = &reqs[i];
                ar->as = &as;
                ar->idx = i;
                /* Two wait in a blackhole, two in backoff, two queued behind the host limit. */
                url_for(i % 3 == 1 ? "/c/backoff" : "/c/blackhole", ar->url, sizeof(ar->url));
                ar->len = 100;
                ar->q = get_range(ar->url, 0, ar->len, ar->buf);
                ar->q.deadline_ns = cairn_fetch_now_ns() + 60ull * 1000 * 1000 * 1000;
                assert_int_equal(cairn_fetch_submit(f, &ar->q, async_done, ar), 0);
        }
        struct sync_caller sc = {.fetch = f, .url = reqs[0].url, .result = 1};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, sync_caller_main, &sc), 0);
        /* Wait until the server holds requests (the host limit is 4). */
        for (int i = 0; i < 200; i++) {
                pthread_mutex_lock(&srv.lock);
                unsigned holes = srv.blackholed - holes_before;
                pthread_mutex_unlock(&srv.lock);
                if (holes >= 3)
                        break;
                usleep(10 * 1000);
        }
        usleep(100 * 1000);
        uint64_t t0 = now_ms();
        cairn_fetch_free(f);
        assert_true(now_ms() - t0 < 1000);
        pthread_join(t, NULL);
        assert_int_equal(sc.result, -ECANCELED);
        pthread_mutex_lock(&as.lock);
        assert_int_equal(as.done, 6);
        for (unsigned i = 0; i < 6; i++) {
                assert_int_equal(as.results[i], -ECANCELED);
                assert_int_equal(as.calls[i], 1);
        }
        pthread_mutex_unlock(&as.lock);
        async_destroy(&as);
        free(reqs);
}

/* Runs fn in a child and returns its exit status, or -1 if it did not exit within ms. */
static int in_child(int (*fn)(struct cairn_fetch *), struct cairn_fetch *f, unsigned ms)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                _exit(fn(f));
        for (unsigned waited = 0; waited < ms; waited += 10) {
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
                usleep(10 * 1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
}

/* No cmocka assertion in a child: a failure would unwind into the runner's copy. */
static int child_reads(struct cairn_fetch *f)
{
        char url[256];
        uint8_t buf[5000];
        url_for("/fork/child", url, sizeof(url));
        for (unsigned i = 0; i < 3; i++) {
                struct cairn_fetch_request q = get_range(url, i * 1000, sizeof(buf), buf);
                if (cairn_fetch_do(f, &q, NULL) != 0 ||
                    !object_equal("/fork/child", i * 1000, sizeof(buf), buf))
                        return 1;
        }
        cairn_fetch_free(f);
        return 0;
}

static int child_frees(struct cairn_fetch *f)
{
        cairn_fetch_free(f);
        return 0;
}

/* A thread does not survive fork(): a child's first request gets it an engine of its own. */
static void test_fork(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 5000);
        struct cairn_fetch_response resp;
        assert_int_equal(read_range(f, "/fork/parent", 0, 5000, &resp), 0);
        assert_int_equal(in_child(child_reads, f, 10000), 0);
        assert_int_equal(in_child(child_frees, f, 10000), 0);
        /* The parent's engine is untouched by either. */
        assert_int_equal(read_range(f, "/fork/parent", 100, 5000, &resp), 0);
        assert_int_equal(resp.attempts, 1);
        cairn_fetch_free(f);
}

/* ---- scatter reads: a body over a list of caller buffers ---- */

#define GUARD 16 /* bytes of 0x5a on each side of every scatter buffer */

struct scatter {
        struct iovec iov[CAIRN_FETCH_IOV_MAX];
        uint8_t *mem[CAIRN_FETCH_IOV_MAX]; /* each buffer with its guards */
        unsigned n;
        uint64_t total;
};

static void scatter_init(struct scatter *sc, const size_t *lens, unsigned n)
{
        sc->n = n;
        sc->total = 0;
        for (unsigned i = 0; i < n; i++) {
                sc->mem[i] = malloc(lens[i] + 2 * GUARD);
                assert_non_null(sc->mem[i]);
                memset(sc->mem[i], 0x5a, lens[i] + 2 * GUARD);
                sc->iov[i].iov_base = sc->mem[i] + GUARD;
                sc->iov[i].iov_len = lens[i];
                sc->total += lens[i];
        }
}

static void scatter_free(struct scatter *sc)
{
        for (unsigned i = 0; i < sc->n; i++)
                free(sc->mem[i]);
        sc->n = 0;
}

/* Every buffer holds its slice of path's object from off, and nothing was written around it. */
static void scatter_check(const struct scatter *sc, const char *path, uint64_t off)
{
        uint64_t pos = off;
        for (unsigned i = 0; i < sc->n; i++) {
                size_t len = sc->iov[i].iov_len;
                for (size_t g = 0; g < GUARD; g++)
                        if (sc->mem[i][g] != 0x5a || sc->mem[i][GUARD + len + g] != 0x5a)
                                fail_msg("'%s': write outside buffer %u", path, i);
                if (!object_equal(path, pos, len, sc->iov[i].iov_base))
                        fail_msg("'%s': wrong bytes in buffer %u (%zu bytes at %llu)", path, i,
                                 len, (unsigned long long)pos);
                pos += len;
        }
}

static struct cairn_fetch_request get_range_iov(const char *url, uint64_t off,
                                                const struct scatter *sc)
{
        return (struct cairn_fetch_request){.method = "GET",
                                            .url = url,
                                            .range_offset = off,
                                            .range_len = sc->total,
                                            .out_iov = sc->iov,
                                            .out_iovcnt = sc->n,
                                            .out_fd = -1};
}

static void test_scatter(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        struct cairn_fetch_response resp;
        struct scatter *sc = calloc(1, sizeof(*sc));
        char url[256];
        assert_non_null(sc);
        url_for("/iov/odd", url, sizeof(url));

        /* Odd sizes, empty ones in between: nearly the whole object, from 3. */
        static const size_t odd[] = {1, 0, 1024 * KiB + 3, 0, 7, 1};
        scatter_init(sc, odd, sizeof(odd) / sizeof(odd[0]));
        assert_int_equal(sc->total, OBJ_SIZE - 5);
        struct cairn_fetch_request q = get_range_iov(url, 3, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.status, 206);
        assert_int_equal(resp.body_len, sc->total);
        assert_int_equal(resp.attempts, 1);
        scatter_check(sc, "/iov/odd", 3);
        scatter_free(sc);
        static const size_t odd2[] = {4095, 1, 300 * KiB + 3, 4095, 2};
        scatter_init(sc, odd2, sizeof(odd2) / sizeof(odd2[0]));
        q = get_range_iov(url, 999, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.body_len, sc->total);
        scatter_check(sc, "/iov/odd", 999);
        scatter_free(sc);

        /* The most buffers a request takes, of sizes 0 to 1000. */
        size_t *lens = malloc(CAIRN_FETCH_IOV_MAX * sizeof(*lens));
        assert_non_null(lens);
        uint64_t st = 7;
        for (unsigned i = 0; i < CAIRN_FETCH_IOV_MAX; i++)
                lens[i] = (size_t)(splitmix64(&st) % 1001);
        scatter_init(sc, lens, CAIRN_FETCH_IOV_MAX);
        q = get_range_iov(url, 12345, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.body_len, sc->total);
        scatter_check(sc, "/iov/odd", 12345);
        scatter_free(sc);

        /* An unranged GET into buffers, then the same with one byte too little room. */
        static const size_t whole[] = {OBJ_SIZE / 3, 1, OBJ_SIZE - OBJ_SIZE / 3 - 1};
        scatter_init(sc, whole, 3);
        q = (struct cairn_fetch_request){
            .method = "GET", .url = url, .out_iov = sc->iov, .out_iovcnt = 3, .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.body_len, OBJ_SIZE);
        scatter_check(sc, "/iov/odd", 0);
        sc->iov[2].iov_len--;
        /* Announced longer than the buffers: -EFBIG at once, nothing written, no retry. */
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -EFBIG);
        assert_int_equal(resp.attempts, 1);
        sc->iov[2].iov_len++;
        scatter_free(sc);
        free(lens);
        free(sc);
        cairn_fetch_free(f);
}

static void test_scatter_invalid(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(4, 10000);
        char url[256], a[8], b[8];
        struct iovec iov[CAIRN_FETCH_IOV_MAX + 1];
        url_for("/iov/invalid", url, sizeof(url));
        for (unsigned i = 0; i <= CAIRN_FETCH_IOV_MAX; i++)
                iov[i] = (struct iovec){.iov_base = a, .iov_len = 0};
        iov[0] = (struct iovec){.iov_base = a, .iov_len = sizeof(a)};
        iov[1] = (struct iovec){.iov_base = b, .iov_len = sizeof(b)};

        struct cairn_fetch_request q = {.method = "GET",
                                        .url = url,
                                        .range_len = 16,
                                        .out_iov = iov,
                                        .out_iovcnt = 2,
                                        .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &q, NULL), 0);
        assert_true(object_equal("/iov/invalid", 0, 8, (uint8_t *)a));
        assert_true(object_equal("/iov/invalid", 8, 8, (uint8_t *)b));
        q.out_iovcnt = 0; /* no buffers */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.out_iovcnt = CAIRN_FETCH_IOV_MAX + 1;
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.out_iovcnt = CAIRN_FETCH_IOV_MAX; /* at the limit: fine */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), 0);
        q.out_iovcnt = 2;
        q.range_len = 17; /* more than the buffers hold */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.range_len = 16;
        q.out = a; /* two destinations */
        q.out_cap = sizeof(a);
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.out = NULL;
        q.out_cap = 0;
        q.out_iov = NULL; /* a count without an array */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        q.out_iov = iov;
        iov[1].iov_base = NULL; /* a NULL buffer with room in it */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        iov[1].iov_base = b;
        iov[1].iov_len = SIZE_MAX; /* a total that overflows */
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EINVAL);
        cairn_fetch_free(f);
}

/*
 * A body that breaks off: the next attempt asks for exactly the rest and
 * lands in the right buffer at the right offset, however many times.
 */
static void test_scatter_resume(void **state)
{
        (void)state;
        struct cairn_fetch *f = engine(6, 10000);
        struct cairn_fetch_response resp;
        struct scatter *sc = calloc(1, sizeof(*sc));
        char url[256];
        assert_non_null(sc);

        /*
         * 200 KiB from 1000, cut by a clean close after half the body (100 KiB):
         * the first resumed byte is 100 bytes into the buffer that starts at
         * 100 KiB - 100; the second close cuts the remaining 100 KiB after 50 KiB,
         * at 150 KiB, which is 1 byte into the last buffer (after a 1-byte one).
         */
        static const size_t lens[] = {1, 4095, 100 * KiB - 4096 - 100, 333, 0,
                                      50 * KiB - 233 - 2, 1, 50 * KiB + 1};
        scatter_init(sc, lens, sizeof(lens) / sizeof(lens[0]));
        assert_int_equal(sc->total, 200 * KiB);
        url_for("/iov/truncate", url, sizeof(url));
        script_set("/iov/truncate", false, 3, B_TRUNCATE, B_WRONG_RANGE, B_TRUNCATE);
        struct cairn_fetch_request q = get_range_iov(url, 1000, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.attempts, 4);
        assert_int_equal(resp.body_len, 200 * KiB);
        /* The last request asked for the last 50 KiB only: resumed, not restarted. */
        assert_int_equal(script_last_range_start("/iov/truncate"), 1000 + 150 * KiB);
        scatter_check(sc, "/iov/truncate", 1000);
        scatter_free(sc);

        /* A cut on a buffer boundary: the rest starts at the next buffer's first byte. */
        static const size_t edge[] = {50 * KiB, 50 * KiB, 100 * KiB};
        scatter_init(sc, edge, 3);
        url_for("/iov/edge", url, sizeof(url));
        script_set("/iov/edge", false, 1, B_TRUNCATE);
        q = get_range_iov(url, 0, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        assert_int_equal(resp.attempts, 2);
        assert_int_equal(script_last_range_start("/iov/edge"), 100 * KiB);
        scatter_check(sc, "/iov/edge", 0);
        scatter_free(sc);

        /*
         * Resets (wherever the RST cuts), a body too long (all of it came, then
         * junk: the next attempt starts over at the first buffer), a 200 for
         * the range, a short Content-Length: the bytes still end up right.
         */
        static const size_t many[] = {7, 64 * KiB + 1, 1, 0, 3 * KiB, 200 * KiB - 67 * KiB - 9};
        scatter_init(sc, many, sizeof(many) / sizeof(many[0]));
        assert_int_equal(sc->total, 200 * KiB);
        url_for("/iov/mixed", url, sizeof(url));
        script_set("/iov/mixed", false, 5, B_RESET, B_LONG_BODY, B_FULL_200, B_SHORT_CL, B_RESET);
        q = get_range_iov(url, 77, sc);
        assert_int_equal(cairn_fetch_do(f, &q, &resp), 0);
        /* Not exactly 6: libcurl itself retries a reused connection whose RST came first. */
        assert_true(resp.attempts >= 2);
        scatter_check(sc, "/iov/mixed", 77);
        scatter_free(sc);

        /* A stream without a range that ends early is not resumed: no Range asked again. */
        static const size_t small[] = {1000, 24};
        scatter_init(sc, small, 2);
        url_for("/iov/close-short", url, sizeof(url));
        script_set("/iov/close-short", false, 1, B_CLOSE_SHORT);
        q = (struct cairn_fetch_request){
            .method = "GET", .url = url, .out_iov = sc->iov, .out_iovcnt = 2, .out_fd = -1};
        /* No Content-Length and half the object is far more than 1024 bytes: the cap. */
        assert_int_equal(cairn_fetch_do(f, &q, &resp), -EFBIG);
        assert_int_equal(resp.attempts, 1);
        for (unsigned i = 0; i < 2; i++)
                for (size_t g = 0; g < GUARD; g++)
                        assert_int_equal(sc->mem[i][g], 0x5a);
        assert_int_equal(sc->mem[1][GUARD + 24], 0x5a);
        scatter_free(sc);
        free(sc);
        cairn_fetch_free(f);
}

static void test_options_default(void **state)
{
        (void)state;
        struct cairn_fetch_options o;
        setenv("CAIRN_FETCH_DEADLINE_MS", "1234", 1);
        setenv("CAIRN_FETCH_MAX_CONNECTIONS", "junk", 1);
        cairn_fetch_options_default(&o);
        assert_int_equal(o.deadline_ms, 1234);
        assert_int_equal(o.max_connections, 8);
        assert_int_equal(o.max_attempts, 6);
        assert_false(o.insecure);
        unsetenv("CAIRN_FETCH_DEADLINE_MS");
        unsetenv("CAIRN_FETCH_MAX_CONNECTIONS");
        cairn_fetch_options_default(&o);
        assert_int_equal(o.deadline_ms, 30000);
        /* A NULL options pointer means the defaults; free(NULL) is a no-op. */
        struct cairn_fetch *f = NULL;
        assert_int_equal(cairn_fetch_new(NULL, &f), 0);
        cairn_fetch_free(f);
        cairn_fetch_free(NULL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_options_default),    cmocka_unit_test(test_ranges_and_reuse),
            cmocka_unit_test(test_invalid_requests),   cmocka_unit_test(test_retry_each_fault),
            cmocka_unit_test(test_final_errors),       cmocka_unit_test(test_bounded_attempts),
            cmocka_unit_test(test_deadline),           cmocka_unit_test(test_deadline_many),
            cmocka_unit_test(test_stream_to_fd),       cmocka_unit_test(test_put_and_sign),
            cmocka_unit_test(test_concurrent_callers), cmocka_unit_test(test_async_submit),
            cmocka_unit_test(test_free_cancels),       cmocka_unit_test(test_fork),
            cmocka_unit_test(test_scatter),            cmocka_unit_test(test_scatter_invalid),
            cmocka_unit_test(test_scatter_resume),
        };
        return cmocka_run_group_tests_name("fetch", tests, server_start, server_stop);
}
