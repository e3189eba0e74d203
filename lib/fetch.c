/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fetch engine (include/cairn/fetch.h): one libcurl multi handle, one
 * event thread that owns it, and a mutex-protected queue through which any
 * thread hands requests over (curl_multi_wakeup interrupts the poll).  All
 * curl calls happen on the event thread, so no curl handle is ever shared
 * between threads and the multi handle's connection cache is reused by
 * every request.
 *
 * A request is a job that goes through attempts.  Each attempt gets a
 * timeout that never reaches past the request's deadline, a connect
 * timeout and a low-speed limit (stalls).  The header callback checks what
 * the server claims (status, Content-Range, Content-Length) before a single
 * body byte is accepted, and the write callback copies only into the
 * caller's buffer or fd, never past the range asked or the caller's cap.
 * A failed attempt is classified as final (404, 401/403, other 4xx, local
 * errors) or retryable (connection errors, resets, stalls, short bodies,
 * 5xx, 429, S3 throttling codes, a 200 or a wrong Content-Range where a
 * range was asked, a body longer than asked) and retried after an
 * exponential backoff with full jitter, within a bounded number of attempts.
 * Ranged reads and streams into an fd resume where the previous attempt
 * stopped: blobs are content-addressed, so the bytes cannot change under
 * us, and the caller verifies digests anyway.
 *
 * The deadline is the event thread's to enforce, in whatever state a job
 * is (queued, transferring, waiting in backoff): past it the job completes
 * with -ETIMEDOUT.
 *
 * A thread does not survive fork(): a child that inherited an engine
 * would wait forever for an event thread that is not there.  So the
 * engine notes its process, and the first request in a child gives the
 * child an engine of its own (new multi handle, new thread) after closing
 * its copies of the parent's connections; the parent's requests, curl
 * handles and lock state are left behind untouched.  Sockets are opened
 * close-on-exec, so programs the application runs never inherit them.
 */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cairn/fdio.h"
#include "cairn/fetch.h"
#include "cairn/log.h"
#include "cairn/s3.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0"
#endif

#define DEFAULT_MAX_CONNECTIONS    8u
#define DEFAULT_MAX_ATTEMPTS       6u
#define DEFAULT_DEADLINE_MS        30000u
#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_STALL_TIMEOUT_MS   5000u
#define DEFAULT_BACKOFF_BASE_MS    50u
#define DEFAULT_BACKOFF_MAX_MS     2000u

/* Below this many bytes per second for stall_timeout_ms an attempt is a stall. */
#define STALL_BYTES_PER_SECOND 1024L
/* Error bodies are kept for their S3 <Code>/<Message> only. */
#define ERROR_BODY_MAX (16u * 1024)
/* Error bodies are read (and dropped) up to this, so that the connection stays reusable. */
#define ERROR_BODY_DRAIN_MAX (1u << 20)
/* A success body with nowhere to go (no out, no fd) is dropped up to this; more is -EFBIG. */
#define DISCARD_BODY_MAX (64u * 1024)
/* Idle easy handles kept for reuse (each holds a receive buffer). */
#define EASY_POOL_MAX    64
#define RECV_BUFFER_SIZE (256L * 1024)
/* The event thread wakes at least this often, whatever curl says. */
#define POLL_MAX_MS 1000
/* A curl timeout reported this close to the deadline is the deadline. */
#define DEADLINE_SLACK_NS (2ull * 1000 * 1000)
#define NS_PER_MS         (1000ull * 1000)
/* Sockets remembered for closing after fork(); more are fine, just not closed then. */
#define SOCKETS_TRACKED 1024

enum job_state {
        JOB_QUEUED,  /* in fetch->queue, not yet seen by the event thread */
        JOB_RUNNING, /* an attempt is in the multi handle */
        JOB_BACKOFF, /* waiting for retry_at_ns */
};

/* How an attempt ended, from the callbacks' point of view. */
enum fault {
        FAULT_NONE,
        FAULT_RETRY, /* the server lied or misbehaved: retry */
        FAULT_FATAL, /* give up with fault_err */
};

struct fetch_job {
        /* Links in fetch->queue (protected by fetch->lock) or, once the
         * event thread took it, in its private active list. */
        struct fetch_job *prev, *next;
        /* A copy; the strings and buffers it points to are borrowed. */
        struct cairn_fetch_request req;
        cairn_fetch_done_fn done;
        void *ctx;
        enum job_state state;
        uint64_t deadline_ns;
        uint64_t retry_at_ns;
        unsigned attempt; /* attempts started */
        bool resumable;   /* a later attempt continues at delivered */
        bool to_fd;
        bool to_mem;      /* the body goes to out or out_iov */
        uint64_t mem_cap; /* to_mem: out_cap, or the total length of out_iov */
        uint64_t delivered;   /* body bytes given to out/out_fd (or dropped), all attempts */
        /* Where byte iov_at of the body goes: out_iov[iov_idx], iov_off bytes in.  A
         * cache of iov_locate(delivered), redone whenever iov_at falls behind. */
        unsigned iov_idx;
        size_t iov_off;
        uint64_t iov_at;
        uint64_t known_total; /* full object size once a response said so; UINT64_MAX */

        /* The current attempt (event thread only). */
        CURL *easy;
        struct curl_slist *headers;
        uint64_t want_start; /* range asked: [want_start, want_start + want_len) */
        uint64_t want_len;   /* 0: open-ended ("bytes=want_start-") */
        bool want_range;
        long status;
        bool headers_done;     /* the final response's headers were checked */
        bool is_success;       /* final status is 2xx */
        uint64_t expect_body;  /* body length the checked headers promise; UINT64_MAX unknown */
        uint64_t attempt_body; /* 2xx body bytes in this attempt */
        uint64_t content_length;
        bool have_range;
        bool encoded; /* a Content-Encoding other than identity: not the object's bytes */
        uint64_t range_start, range_end, range_total;
        unsigned retry_after_s;
        char etag[130];
        enum fault fault;
        int fault_err;
        const char *fault_why; /* static text for the debug log */
        size_t upload_off;
        char *err_body; /* ERROR_BODY_MAX, allocated on the first error body */
        size_t err_len;
        size_t err_seen;
        char curl_err[CURL_ERROR_SIZE];

        struct cairn_fetch_response resp;
};

struct cairn_fetch {
        struct cairn_fetch_options opts;
        char *ca_file;
        pid_t pid; /* the process the event thread runs in (atomic) */
        CURLM *multi;
        pthread_t thread;
        bool thread_started;

        pthread_mutex_t lock;
        struct fetch_job *queue_head; /* protected by lock */
        struct fetch_job *queue_tail; /* protected by lock */
        bool stopping;                /* protected by lock */

        /* Event thread only. */
        struct fetch_job *active; /* running or in backoff */
        CURL *pool[EASY_POOL_MAX];
        unsigned npool;
        uint64_t rng;
        /* Event thread only (and curl_multi_cleanup in _free, after the thread is gone). */
        int sockets[SOCKETS_TRACKED];
        unsigned nsockets;
};

uint64_t cairn_fetch_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- options ---- */

static void env_unsigned(const char *name, unsigned *val)
{
        const char *s = getenv(name);
        if (!s || !*s)
                return;
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *end || s[0] == '-' || v == 0 || v > UINT_MAX) {
                cairn_debug("ignoring invalid %s='%s'", name, s);
                return;
        }
        *val = (unsigned)v;
}

void cairn_fetch_options_default(struct cairn_fetch_options *ret_opts)
{
        struct cairn_fetch_options o = {
            .max_connections = DEFAULT_MAX_CONNECTIONS,
            .max_attempts = DEFAULT_MAX_ATTEMPTS,
            .deadline_ms = DEFAULT_DEADLINE_MS,
            .connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS,
            .stall_timeout_ms = DEFAULT_STALL_TIMEOUT_MS,
            .backoff_base_ms = DEFAULT_BACKOFF_BASE_MS,
            .backoff_max_ms = DEFAULT_BACKOFF_MAX_MS,
        };
        env_unsigned("CAIRN_FETCH_MAX_CONNECTIONS", &o.max_connections);
        env_unsigned("CAIRN_FETCH_MAX_ATTEMPTS", &o.max_attempts);
        env_unsigned("CAIRN_FETCH_DEADLINE_MS", &o.deadline_ms);
        env_unsigned("CAIRN_FETCH_CONNECT_TIMEOUT_MS", &o.connect_timeout_ms);
        env_unsigned("CAIRN_FETCH_STALL_TIMEOUT_MS", &o.stall_timeout_ms);
        env_unsigned("CAIRN_FETCH_BACKOFF_BASE_MS", &o.backoff_base_ms);
        env_unsigned("CAIRN_FETCH_BACKOFF_MAX_MS", &o.backoff_max_ms);
        const char *ca = getenv("CAIRN_CA_FILE");
        if (ca && *ca)
                o.ca_file = ca;
        /* insecure is never taken from the environment: only an explicit flag may set it. */
        *ret_opts = o;
}

static void options_resolve(struct cairn_fetch_options *o)
{
        if (!o->max_connections)
                o->max_connections = DEFAULT_MAX_CONNECTIONS;
        if (!o->max_attempts)
                o->max_attempts = DEFAULT_MAX_ATTEMPTS;
        if (!o->deadline_ms)
                o->deadline_ms = DEFAULT_DEADLINE_MS;
        if (!o->connect_timeout_ms)
                o->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
        if (!o->stall_timeout_ms)
                o->stall_timeout_ms = DEFAULT_STALL_TIMEOUT_MS;
        if (!o->backoff_base_ms)
                o->backoff_base_ms = DEFAULT_BACKOFF_BASE_MS;
        if (!o->backoff_max_ms)
                o->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
        if (o->backoff_max_ms < o->backoff_base_ms)
                o->backoff_max_ms = o->backoff_base_ms;
}

/* ---- small parsers for response headers (untrusted, not NUL-terminated) ---- */

/* Decimal digits only, no sign, no overflow. */
static bool parse_u64(const char *s, size_t len, uint64_t *ret)
{
        uint64_t v = 0;
        if (len == 0 || len > 20)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                unsigned d = (unsigned)(s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *ret = v;
        return true;
}

/* "bytes START-END/TOTAL", TOTAL may be '*' (then UINT64_MAX). */
static bool parse_content_range(const char *s, size_t len, uint64_t *ret_start, uint64_t *ret_end,
                                uint64_t *ret_total)
{
        uint64_t start, end, total = UINT64_MAX;
        if (len < 6 || strncasecmp(s, "bytes ", 6) != 0)
                return false;
        s += 6;
        len -= 6;
        while (len && *s == ' ') {
                s++;
                len--;
        }
        const char *dash = memchr(s, '-', len);
        const char *slash = memchr(s, '/', len);
        if (!dash || !slash || dash > slash)
                return false;
        if (!parse_u64(s, (size_t)(dash - s), &start) ||
            !parse_u64(dash + 1, (size_t)(slash - dash - 1), &end))
                return false;
        size_t tlen = len - (size_t)(slash + 1 - s);
        if (!(tlen == 1 && slash[1] == '*') && !parse_u64(slash + 1, tlen, &total))
                return false;
        if (end < start || (total != UINT64_MAX && end >= total))
                return false;
        *ret_start = start;
        *ret_end = end;
        *ret_total = total;
        return true;
}

static bool header_is(const char *name, size_t len, const char *want)
{
        return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* ---- curl callbacks (event thread) ---- */

static void job_fault(struct fetch_job *j, enum fault f, int err, const char *why)
{
        if (j->fault != FAULT_NONE)
                return;
        j->fault = f;
        j->fault_err = err;
        j->fault_why = why;
}

/* Called once the final response's headers are in: decide whether its body may be accepted. */
static bool headers_check(struct fetch_job *j)
{
        const struct cairn_fetch_request *q = &j->req;

        j->headers_done = true;
        j->is_success = j->status >= 200 && j->status < 300;
        if (!j->is_success)
                return true; /* the body is an error document, kept apart */
        if (j->encoded) {
                job_fault(j, FAULT_RETRY, -EIO, "body with a Content-Encoding");
                return false;
        }
        if (j->have_range && j->range_total != UINT64_MAX)
                j->known_total = j->range_total;
        if (j->want_range) {
                if (j->status != 206) {
                        job_fault(j, FAULT_RETRY, -EIO, "full body where a range was asked");
                        return false;
                }
                if (!j->have_range || j->range_start != j->want_start) {
                        job_fault(j, FAULT_RETRY, -EIO, "Content-Range does not match the request");
                        return false;
                }
                uint64_t len = j->range_end - j->range_start + 1;
                if ((j->want_len && len != j->want_len) ||
                    (!j->want_len && j->range_total != UINT64_MAX &&
                     j->range_end + 1 != j->range_total)) {
                        job_fault(j, FAULT_RETRY, -EIO, "Content-Range does not match the request");
                        return false;
                }
                if (j->content_length != UINT64_MAX && j->content_length != len) {
                        job_fault(j, FAULT_RETRY, -EIO,
                                  "Content-Length does not match Content-Range");
                        return false;
                }
                j->expect_body = len;
        } else {
                if (j->status == 206) {
                        job_fault(j, FAULT_RETRY, -EIO, "partial content where none was asked");
                        return false;
                }
                j->expect_body = j->content_length;
                if (j->content_length != UINT64_MAX && strcmp(q->method, "HEAD") != 0) {
                        j->known_total = j->content_length;
                        uint64_t cap = j->to_mem  ? j->mem_cap
                                       : j->to_fd ? q->out_fd_cap
                                                  : DISCARD_BODY_MAX;
                        if (j->content_length > cap) {
                                job_fault(j, FAULT_FATAL, -EFBIG, "body over its cap");
                                return false;
                        }
                }
        }
        if (strcmp(q->method, "HEAD") == 0)
                j->expect_body = 0;
        return true;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct fetch_job *j = userdata;
        size_t n = size * nitems;

        if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
                /* A new response (after a 1xx, or the first): forget the previous headers. */
                const char *sp = memchr(buf, ' ', n);
                uint64_t code = 0;
                j->status = 0;
                j->headers_done = false;
                j->have_range = false;
                j->content_length = UINT64_MAX;
                j->retry_after_s = 0;
                j->encoded = false;
                j->etag[0] = '\0';
                if (!sp || (size_t)(buf + n - sp) < 4 || !parse_u64(sp + 1, 3, &code)) {
                        job_fault(j, FAULT_RETRY, -EIO, "malformed status line");
                        return 0;
                }
                j->status = (long)code;
                return n;
        }
        if (n <= 2 && n >= 1 && (buf[0] == '\r' || buf[0] == '\n')) {
                if (j->status >= 200 && !j->headers_done && !headers_check(j))
                        return 0;
                return n;
        }
        const char *colon = memchr(buf, ':', n);
        if (!colon)
                return n; /* a folded line or junk: nothing we need */
        size_t nlen = (size_t)(colon - buf);
        const char *v = colon + 1;
        size_t vlen = n - nlen - 1;
        while (vlen && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
                        v[vlen - 1] == '\t'))
                vlen--;

        if (header_is(buf, nlen, "Content-Length")) {
                if (!parse_u64(v, vlen, &j->content_length)) {
                        job_fault(j, FAULT_RETRY, -EIO, "malformed Content-Length");
                        return 0;
                }
        } else if (header_is(buf, nlen, "Content-Range")) {
                if (!parse_content_range(v, vlen, &j->range_start, &j->range_end,
                                         &j->range_total)) {
                        /* "bytes *" "/N" comes with a 416; only a 2xx needs a range. */
                        j->have_range = false;
                        return n;
                }
                j->have_range = true;
        } else if (header_is(buf, nlen, "ETag")) {
                if (vlen < sizeof(j->etag)) {
                        memcpy(j->etag, v, vlen);
                        j->etag[vlen] = '\0';
                } else {
                        j->etag[0] = '\0'; /* longer than any real ETag: not ours to keep */
                }
        } else if (header_is(buf, nlen, "Content-Encoding")) {
                /* We never ask for an encoding; a server that applies one anyway sends other bytes.
                 */
                j->encoded = !(vlen == 8 && strncasecmp(v, "identity", 8) == 0) && vlen > 0;
        } else if (header_is(buf, nlen, "Retry-After")) {
                uint64_t s;
                if (parse_u64(v, vlen, &s))
                        j->retry_after_s = s > 3600 ? 3600 : (unsigned)s;
        }
        return n;
}

/*
 * Points the iovec cursor at byte pos of the body.  The destination is a
 * function of the byte offset alone: a resumed attempt lands exactly where
 * the broken one stopped, and one that starts over lands at the start.
 */
static void iov_locate(struct fetch_job *j, uint64_t pos)
{
        const struct iovec *iov = j->req.out_iov;
        unsigned i = 0;
        uint64_t left = pos;

        while (i < j->req.out_iovcnt && left >= iov[i].iov_len) {
                left -= iov[i].iov_len;
                i++;
        }
        /* pos <= mem_cap (checked by the callers): i == out_iovcnt only at the very end. */
        j->iov_idx = i;
        j->iov_off = (size_t)left;
        j->iov_at = pos;
}

/* Copies n body bytes to position delivered of out_iov (the caller checked the cap). */
static void iov_scatter(struct fetch_job *j, const char *data, size_t n)
{
        const struct iovec *iov = j->req.out_iov;

        if (j->iov_at != j->delivered)
                iov_locate(j, j->delivered);
        while (n) {
                const struct iovec *v = &iov[j->iov_idx];
                size_t room = v->iov_len - j->iov_off;
                size_t take = n < room ? n : room;
                if (take) /* an empty entry may have a NULL base */
                        memcpy((char *)v->iov_base + j->iov_off, data, take);
                data += take;
                n -= take;
                j->iov_off += take;
                j->iov_at += take;
                if (j->iov_off == v->iov_len) {
                        j->iov_idx++;
                        j->iov_off = 0;
                }
        }
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct fetch_job *j = userdata;
        const struct cairn_fetch_request *q = &j->req;
        size_t n = size * nmemb;

        if (j->fault != FAULT_NONE)
                return 0;
        if (!j->headers_done) {
                /* curl delivers headers first; be strict if it ever does not. */
                if (j->status < 200 || !headers_check(j))
                        return 0;
        }
        if (!j->is_success) {
                j->err_seen += n;
                if (j->err_seen > ERROR_BODY_DRAIN_MAX)
                        return 0; /* classified by status anyway */
                if (!j->err_body) {
                        j->err_body = malloc(ERROR_BODY_MAX);
                        if (!j->err_body)
                                return n; /* the status still says enough */
                }
                size_t room = ERROR_BODY_MAX - j->err_len;
                size_t take = n < room ? n : room;
                memcpy(j->err_body + j->err_len, data, take);
                j->err_len += take;
                return n;
        }
        if (j->expect_body != UINT64_MAX && j->attempt_body + n > j->expect_body) {
                job_fault(j, FAULT_RETRY, -EIO, "body longer than announced");
                return 0;
        }
        if (j->to_mem) {
                if (j->delivered + n > j->mem_cap) {
                        job_fault(j, FAULT_FATAL, -EFBIG, "body over its cap");
                        return 0;
                }
                if (q->out)
                        memcpy((char *)q->out + j->delivered, data, n);
                else
                        iov_scatter(j, data, n);
        } else if (j->to_fd) {
                if (j->delivered + n > q->out_fd_cap) {
                        job_fault(j, FAULT_FATAL, -EFBIG, "body over its cap");
                        return 0;
                }
                int r = cairn_write_all(q->out_fd, data, n);
                if (r < 0) {
                        job_fault(j, FAULT_FATAL, r, "cannot write the body to its fd");
                        return 0;
                }
        } else if (j->delivered + n > DISCARD_BODY_MAX) {
                job_fault(j, FAULT_FATAL, -EFBIG, "body over its cap");
                return 0;
        }
        j->delivered += n;
        j->attempt_body += n;
        return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct fetch_job *j = userdata;
        size_t room = size * nitems;
        size_t left = j->req.body_len - j->upload_off;
        size_t n = left < room ? left : room;
        if (n)
                memcpy(buf, (const char *)j->req.body + j->upload_off, n);
        j->upload_off += n;
        return n;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
        struct fetch_job *j = userdata;
        if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > j->req.body_len)
                return CURL_SEEKFUNC_FAIL;
        j->upload_off = (size_t)offset;
        return CURL_SEEKFUNC_OK;
}

static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
        struct cairn_fetch *f = clientp;
        (void)purpose;
        int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
        if (fd < 0)
                return CURL_SOCKET_BAD;
        if (f->nsockets < SOCKETS_TRACKED)
                f->sockets[f->nsockets++] = fd;
        return fd;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
        struct cairn_fetch *f = clientp;
        for (unsigned i = 0; i < f->nsockets; i++)
                if (f->sockets[i] == fd) {
                        f->sockets[i] = f->sockets[--f->nsockets];
                        break;
                }
        return close(fd);
}

/* ---- jobs on the event thread ---- */

static uint64_t rng_next(struct cairn_fetch *f)
{
        /* xorshift64*: jitter only, no secrecy needed. */
        f->rng ^= f->rng >> 12;
        f->rng ^= f->rng << 25;
        f->rng ^= f->rng >> 27;
        return f->rng * 0x2545f4914f6cdd1dull;
}

static void active_add(struct cairn_fetch *f, struct fetch_job *j)
{
        j->prev = NULL;
        j->next = f->active;
        if (f->active)
                f->active->prev = j;
        f->active = j;
}

static void active_remove(struct cairn_fetch *f, struct fetch_job *j)
{
        if (j->prev)
                j->prev->next = j->next;
        else
                f->active = j->next;
        if (j->next)
                j->next->prev = j->prev;
        j->prev = j->next = NULL;
}

static void headers_free(struct curl_slist *list)
{
        /* Signed headers may carry a session token: wipe before freeing. */
        for (struct curl_slist *l = list; l; l = l->next)
                explicit_bzero(l->data, strlen(l->data));
        curl_slist_free_all(list);
}

/* Ends the current attempt's transfer and gives its easy handle back to the pool. */
static void attempt_release(struct cairn_fetch *f, struct fetch_job *j)
{
        if (j->easy) {
                curl_multi_remove_handle(f->multi, j->easy);
                if (f->npool < EASY_POOL_MAX) {
                        curl_easy_reset(j->easy);
                        f->pool[f->npool++] = j->easy;
                } else {
                        curl_easy_cleanup(j->easy);
                }
                j->easy = NULL;
        }
        headers_free(j->headers);
        j->headers = NULL;
}

/* Completes the job: exactly one call of done, then the job is gone. */
static void job_finish(struct cairn_fetch *f, struct fetch_job *j, int result)
{
        struct cairn_fetch_response *resp = &j->resp;

        attempt_release(f, j);
        active_remove(f, j);
        resp->status = j->status;
        resp->body_len = j->delivered;
        resp->content_length = j->content_length;
        resp->total_size = j->known_total;
        snprintf(resp->etag, sizeof(resp->etag), "%s", j->etag);
        resp->attempts = j->attempt;
        if (result < 0)
                cairn_debug("%s '%s' failed after %u attempt(s): %s (http %ld%s%s)",
                            j->req.method, j->req.url, j->attempt, strerror(-result), j->status,
                            resp->error_message[0] ? ", " : "", resp->error_message);
        j->done(j->ctx, result, resp);
        free(j->err_body);
        free(j);
}

static bool header_line_valid(const char *h, size_t max)
{
        const char *end = memchr(h, '\0', max);
        if (!end || end == h || !memchr(h, ':', (size_t)(end - h)))
                return false;
        /* No CR/LF: a header must not smuggle another one in. */
        return strpbrk(h, "\r\n") == NULL;
}

static bool has_header(const struct curl_slist *list, const char *name)
{
        size_t len = strlen(name);
        for (; list; list = list->next)
                if (strncasecmp(list->data, name, len) == 0 && list->data[len] == ':')
                        return true;
        return false;
}

static int headers_append(struct curl_slist **list, const char *h)
{
        struct curl_slist *n = curl_slist_append(*list, h);
        if (!n)
                return -ENOMEM;
        *list = n;
        return 0;
}

static int attempt_headers(struct fetch_job *j)
{
        const struct cairn_fetch_request *q = &j->req;
        char signed_hdrs[CAIRN_FETCH_MAX_HEADERS][512];
        unsigned nsigned = 0;
        int r = 0;

        if (q->headers)
                for (const char *const *h = q->headers; *h; h++) {
                        if (!header_line_valid(*h, 8192))
                                return -EINVAL;
                        r = headers_append(&j->headers, *h);
                        if (r < 0)
                                return r;
                }
        if (q->sign) {
                /* Signed per attempt so that the signature carries the attempt's time. */
                r = q->sign(q->sign_ctx, q, signed_hdrs, &nsigned);
                if (r >= 0 && nsigned > CAIRN_FETCH_MAX_HEADERS)
                        r = -EINVAL;
                for (unsigned i = 0; r >= 0 && i < nsigned; i++) {
                        if (!header_line_valid(signed_hdrs[i], sizeof(signed_hdrs[i])))
                                r = -EINVAL;
                        else
                                r = headers_append(&j->headers, signed_hdrs[i]);
                }
                explicit_bzero(signed_hdrs, sizeof(signed_hdrs));
                if (r < 0)
                        return r;
        }
        bool upload = q->body || !strcmp(q->method, "PUT") || !strcmp(q->method, "POST");
        if (upload) {
                /* No 100-continue round trip; and no form Content-Type curl would invent. */
                if (!has_header(j->headers, "Expect"))
                        r = headers_append(&j->headers, "Expect:");
                if (r >= 0 && !has_header(j->headers, "Content-Type"))
                        r = headers_append(&j->headers, "Content-Type:");
        }
        return r;
}

#define SETOPT(easy, opt, val)                                                                     \
        do {                                                                                       \
                if (curl_easy_setopt(easy, opt, val) != CURLE_OK) {                                \
                        r = -EIO;                                                                  \
                        goto out;                                                                  \
                }                                                                                  \
        } while (0)

static int attempt_start(struct cairn_fetch *f, struct fetch_job *j)
{
        const struct cairn_fetch_request *q = &j->req;
        uint64_t now = cairn_fetch_now_ns();
        char range[64];
        int r = 0;

        if (now >= j->deadline_ns)
                return -ETIMEDOUT;
        uint64_t left_ms = (j->deadline_ns - now + NS_PER_MS - 1) / NS_PER_MS;
        uint64_t connect_ms =
            f->opts.connect_timeout_ms < left_ms ? f->opts.connect_timeout_ms : left_ms;

        j->attempt++;
        /* Nothing left to resume (all bytes came, then the attempt failed): start over. */
        if (!j->resumable || (q->range_len && j->delivered >= q->range_len))
                j->delivered = 0;
        if (q->out_iov)
                iov_locate(j, j->delivered);
        j->status = 0;
        j->headers_done = false;
        j->is_success = false;
        j->expect_body = UINT64_MAX;
        j->attempt_body = 0;
        j->content_length = UINT64_MAX;
        j->have_range = false;
        j->retry_after_s = 0;
        j->encoded = false;
        j->etag[0] = '\0';
        j->fault = FAULT_NONE;
        j->fault_err = 0;
        j->fault_why = NULL;
        j->upload_off = 0;
        j->err_len = 0;
        j->err_seen = 0;
        j->curl_err[0] = '\0';
        j->resp.error_code[0] = '\0';
        j->resp.error_message[0] = '\0';

        j->want_range = false;
        if (q->range_len) {
                j->want_range = true;
                j->want_start = q->range_offset + j->delivered;
                j->want_len = q->range_len - j->delivered;
                snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)j->want_start,
                         (unsigned long long)(j->want_start + j->want_len - 1));
        } else if (j->resumable && j->delivered) {
                j->want_range = true;
                j->want_start = j->delivered;
                j->want_len = 0;
                snprintf(range, sizeof(range), "%llu-", (unsigned long long)j->want_start);
        }

        if (f->npool)
                j->easy = f->pool[--f->npool];
        else
                j->easy = curl_easy_init();
        if (!j->easy)
                return -ENOMEM;
        r = attempt_headers(j);
        if (r < 0)
                goto out;

        CURL *e = j->easy;
        SETOPT(e, CURLOPT_URL, q->url);
        SETOPT(e, CURLOPT_PRIVATE, j);
        SETOPT(e, CURLOPT_NOSIGNAL, 1L);
        SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
        /*
         * HTTP/1.1 on purpose: with Debian bookworm's libcurl 7.88, parallel
         * range requests multiplexed over one HTTP/2 connection delivered
         * wrong bytes (caught by verification, then refetched); several
         * keep-alive connections give the same parallelism without it.
         */
        SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        SETOPT(e, CURLOPT_USERAGENT, "cairn/" CAIRN_VERSION);
        SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
        /* Never past the deadline, however the attempt spends its time. */
        SETOPT(e, CURLOPT_TIMEOUT_MS, (long)(left_ms > LONG_MAX ? LONG_MAX : left_ms));
        SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES_PER_SECOND);
        SETOPT(e, CURLOPT_LOW_SPEED_TIME, (long)((f->opts.stall_timeout_ms + 999) / 1000));
        SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
        SETOPT(e, CURLOPT_BUFFERSIZE, RECV_BUFFER_SIZE);
        SETOPT(e, CURLOPT_ERRORBUFFER, j->curl_err);
        SETOPT(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
        SETOPT(e, CURLOPT_OPENSOCKETDATA, f);
        SETOPT(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
        SETOPT(e, CURLOPT_CLOSESOCKETDATA, f);
        SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(e, CURLOPT_HEADERDATA, j);
        SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
        SETOPT(e, CURLOPT_WRITEDATA, j);
        if (j->headers)
                SETOPT(e, CURLOPT_HTTPHEADER, j->headers);
        if (f->ca_file)
                SETOPT(e, CURLOPT_CAINFO, f->ca_file);
        if (f->opts.insecure) {
                SETOPT(e, CURLOPT_SSL_VERIFYPEER, 0L);
                SETOPT(e, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (j->want_range)
                SETOPT(e, CURLOPT_RANGE, range);
        if (!strcmp(q->method, "HEAD")) {
                SETOPT(e, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(q->method, "GET")) {
                SETOPT(e, CURLOPT_HTTPGET, 1L);
        } else if (!strcmp(q->method, "PUT") || !strcmp(q->method, "POST") || q->body) {
                SETOPT(e, CURLOPT_UPLOAD, 1L);
                SETOPT(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
                SETOPT(e, CURLOPT_READFUNCTION, on_read);
                SETOPT(e, CURLOPT_READDATA, j);
                SETOPT(e, CURLOPT_SEEKFUNCTION, on_seek);
                SETOPT(e, CURLOPT_SEEKDATA, j);
                if (strcmp(q->method, "PUT") != 0)
                        SETOPT(e, CURLOPT_CUSTOMREQUEST, q->method);
        } else {
                SETOPT(e, CURLOPT_CUSTOMREQUEST, q->method);
        }
        if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
                r = -ENOMEM;
                goto out;
        }
        j->state = JOB_RUNNING;
        return 0;
out:
        attempt_release(f, j);
        return r;
}

/* S3 error codes that mean "try again", whatever the status. */
static bool s3_code_retryable(const char *code)
{
        static const char *const codes[] = {
            "SlowDown",   "InternalError",       "RequestTimeout",  "ServiceUnavailable",
            "Throttling", "ThrottlingException", "RequestThrottled"};
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                if (!strcmp(code, codes[i]))
                        return true;
        return false;
}

/* Keeps the S3 <Code>/<Message> of an XML error body, if there is one. */
static void error_body_parse(struct fetch_job *j)
{
        struct cairn_fetch_response *resp = &j->resp;
        resp->error_code[0] = '\0';
        resp->error_message[0] = '\0';
        if (!j->err_body || !j->err_len)
                return;
        if (cairn_s3_parse_error(j->err_body, j->err_len, resp->error_code,
                                 sizeof(resp->error_code), resp->error_message,
                                 sizeof(resp->error_message)) < 0) {
                resp->error_code[0] = '\0';
                resp->error_message[0] = '\0';
        }
}

/* Transport errors worth another attempt: the next connection may well work. */
static bool curl_code_retryable(CURLcode rc)
{
        switch (rc) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_GOT_NOTHING:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_AGAIN:
        case CURLE_READ_ERROR:
        case CURLE_BAD_CONTENT_ENCODING:
        case CURLE_HTTP3:
        case CURLE_QUIC_CONNECT_ERROR:
                return true;
        default:
                return false;
        }
}

/* The server's certificate could not be verified (or not against what we were told to trust). */
static bool tls_verify_failed(CURLcode rc)
{
        return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
               rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH ||
               rc == CURLE_SSL_CRL_BADFILE;
}

/* Sanitized copy of curl's error text: no control characters in our messages. */
static void copy_printable(char *dst, size_t dlen, const char *src)
{
        size_t i = 0;
        for (; src[i] && i + 1 < dlen; i++)
                dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
        dst[i] = '\0';
}

static void job_retry_or_fail(struct cairn_fetch *f, struct fetch_job *j, const char *why)
{
        uint64_t now = cairn_fetch_now_ns();

        if (why && !j->resp.error_message[0])
                copy_printable(j->resp.error_message, sizeof(j->resp.error_message), why);
        if (j->attempt >= f->opts.max_attempts) {
                job_finish(f, j, -EIO);
                return;
        }
        /* Full jitter: uniform in [0, min(max, base * 2^(attempt-1))]. */
        unsigned shift = j->attempt - 1 < 20 ? j->attempt - 1 : 20;
        uint64_t cap = (uint64_t)f->opts.backoff_base_ms << shift;
        if (cap > f->opts.backoff_max_ms)
                cap = f->opts.backoff_max_ms;
        uint64_t delay_ms = rng_next(f) % (cap + 1);
        if (j->retry_after_s) {
                uint64_t ra = (uint64_t)j->retry_after_s * 1000;
                if (ra > f->opts.backoff_max_ms)
                        ra = f->opts.backoff_max_ms;
                if (ra > delay_ms)
                        delay_ms = ra;
        }
        cairn_debug("%s '%s': attempt %u/%u failed (%s), retrying in %llu ms", j->req.method,
                    j->req.url, j->attempt, f->opts.max_attempts, why,
                    (unsigned long long)delay_ms);
        attempt_release(f, j);
        j->retry_at_ns = now + delay_ms * NS_PER_MS;
        if (j->retry_at_ns >= j->deadline_ns) {
                job_finish(f, j, -ETIMEDOUT);
                return;
        }
        j->state = JOB_BACKOFF;
}

/* An attempt's transfer ended (curl said so): success, retry or final failure. */
static void attempt_done(struct cairn_fetch *f, struct fetch_job *j, CURLcode rc)
{
        const struct cairn_fetch_request *q = &j->req;
        char why[96];

        if (j->fault == FAULT_FATAL) {
                copy_printable(j->resp.error_message, sizeof(j->resp.error_message), j->fault_why);
                job_finish(f, j, j->fault_err);
                return;
        }
        if (j->fault == FAULT_RETRY) {
                job_retry_or_fail(f, j, j->fault_why);
                return;
        }
        /* An error response whose body broke off is still the server's answer. */
        if (rc != CURLE_OK && !(j->headers_done && !j->is_success)) {
                copy_printable(j->resp.error_message, sizeof(j->resp.error_message),
                               j->curl_err[0] ? j->curl_err : curl_easy_strerror(rc));
                j->resp.error_code[0] = '\0';
                if (rc == CURLE_OPERATION_TIMEDOUT &&
                    cairn_fetch_now_ns() + DEADLINE_SLACK_NS >= j->deadline_ns) {
                        job_finish(f, j, -ETIMEDOUT);
                        return;
                }
                if (rc == CURLE_OUT_OF_MEMORY) {
                        job_finish(f, j, -ENOMEM);
                        return;
                }
                if (tls_verify_failed(rc)) {
                        job_finish(f, j, -EKEYREJECTED);
                        return;
                }
                if (!curl_code_retryable(rc)) {
                        job_finish(f, j, -EIO);
                        return;
                }
                snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
                job_retry_or_fail(f, j, why);
                return;
        }
        if (j->is_success) {
                /* Everything announced must have arrived. */
                bool short_body = false;
                if (j->expect_body != UINT64_MAX && j->attempt_body != j->expect_body)
                        short_body = true;
                if (q->range_len && j->delivered != q->range_len)
                        short_body = true;
                if (!q->range_len && j->resumable && j->known_total != UINT64_MAX &&
                    j->delivered != j->known_total)
                        short_body = true;
                if (short_body) {
                        job_retry_or_fail(f, j, "short body");
                        return;
                }
                j->resp.error_code[0] = '\0';
                j->resp.error_message[0] = '\0';
                job_finish(f, j, 0);
                return;
        }
        error_body_parse(j);
        long s = j->status;
        if (s == 404) {
                job_finish(f, j, -ENOENT);
        } else if (s == 401 || s == 403) {
                job_finish(f, j, -EACCES);
        } else if (s == 408 || s == 429 || s >= 500 || s < 200 ||
                   s3_code_retryable(j->resp.error_code)) {
                snprintf(why, sizeof(why), "http %ld%s%s", s, j->resp.error_code[0] ? " " : "",
                         j->resp.error_code);
                job_retry_or_fail(f, j, why);
        } else {
                job_finish(f, j, -EIO);
        }
}

/* ---- the event thread ---- */

static void job_begin(struct cairn_fetch *f, struct fetch_job *j)
{
        active_add(f, j);
        int r = attempt_start(f, j);
        if (r < 0)
                job_finish(f, j, r);
}

/* Takes the submission queue over; returns false when the engine is stopping. */
static bool take_queue(struct cairn_fetch *f, struct fetch_job **ret_list)
{
        pthread_mutex_lock(&f->lock);
        bool stopping = f->stopping;
        *ret_list = f->queue_head;
        f->queue_head = f->queue_tail = NULL;
        pthread_mutex_unlock(&f->lock);
        return !stopping;
}

static void cancel_all(struct cairn_fetch *f, struct fetch_job *list)
{
        while (list) {
                struct fetch_job *j = list;
                list = j->next;
                active_add(f, j);
                job_finish(f, j, -ECANCELED);
        }
        while (f->active)
                job_finish(f, f->active, -ECANCELED);
}

static void *event_thread(void *arg)
{
        struct cairn_fetch *f = arg;
        struct fetch_job *list;

        while (take_queue(f, &list)) {
                while (list) {
                        struct fetch_job *j = list;
                        list = j->next;
                        job_begin(f, j);
                }

                int running = 0;
                curl_multi_perform(f->multi, &running);
                CURLMsg *msg;
                int left;
                while ((msg = curl_multi_info_read(f->multi, &left))) {
                        if (msg->msg != CURLMSG_DONE)
                                continue;
                        struct fetch_job *j = NULL;
                        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
                        CURLcode rc = msg->data.result;
                        /* msg points into the handle: done with it before the handle moves on. */
                        if (j)
                                attempt_done(f, j, rc);
                }

                /* Deadlines and backoffs; find the next moment anything is due. */
                uint64_t now = cairn_fetch_now_ns();
                uint64_t next = now + (uint64_t)POLL_MAX_MS * NS_PER_MS;
                for (struct fetch_job *j = f->active, *nx; j; j = nx) {
                        nx = j->next;
                        if (now >= j->deadline_ns) {
                                job_finish(f, j, -ETIMEDOUT);
                                continue;
                        }
                        if (j->state == JOB_BACKOFF && now >= j->retry_at_ns) {
                                int r = attempt_start(f, j);
                                if (r < 0) {
                                        job_finish(f, j, r);
                                        continue;
                                }
                                next = now; /* let curl start it at once */
                        }
                        if (j->deadline_ns < next)
                                next = j->deadline_ns;
                        if (j->state == JOB_BACKOFF && j->retry_at_ns < next)
                                next = j->retry_at_ns;
                }
                long curl_ms = -1;
                curl_multi_timeout(f->multi, &curl_ms);
                uint64_t wait_ms = next > now ? (next - now + NS_PER_MS - 1) / NS_PER_MS : 0;
                if (curl_ms >= 0 && (uint64_t)curl_ms < wait_ms)
                        wait_ms = (uint64_t)curl_ms;
                if (wait_ms)
                        curl_multi_poll(f->multi, NULL, 0, (int)wait_ms, NULL);
        }
        cancel_all(f, list);
        return NULL;
}

/* ---- public API ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static pid_t fetch_pid(const struct cairn_fetch *f)
{
        return __atomic_load_n(&f->pid, __ATOMIC_ACQUIRE);
}

/* Creates the multi handle and starts the event thread; the engine is then this process's. */
static int fetch_start(struct cairn_fetch *f)
{
        sigset_t all, old;
        int r;

        if (getentropy(&f->rng, sizeof(f->rng)) < 0 || f->rng == 0)
                f->rng = cairn_fetch_now_ns() | 1;
        f->multi = curl_multi_init();
        if (!f->multi)
                return -ENOMEM;
        long maxconnects = (long)f->opts.max_connections * 4;
        if (curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                              (long)f->opts.max_connections) != CURLM_OK ||
            curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS,
                              maxconnects < 16 ? 16L : maxconnects) != CURLM_OK)
                return -EIO;
        /* The event thread takes no signals: they belong to the application's threads. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&f->thread, NULL, event_thread, f);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0)
                return r;
        f->thread_started = true;
        __atomic_store_n(&f->pid, getpid(), __ATOMIC_RELEASE);
        return 0;
}

static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * In a child of fork(): the engine is a copy without its thread.  Leave
 * the parent's state (requests, curl handles, lock) behind and start
 * afresh; only our copies of the parent's sockets are closed.
 */
static int fetch_restart_after_fork(struct cairn_fetch *f)
{
        int r = 0;
        pthread_mutex_lock(&fork_lock);
        if (fetch_pid(f) == getpid())
                goto out; /* another thread of this child did it */
        for (unsigned i = 0; i < f->nsockets; i++)
                close(f->sockets[i]);
        f->nsockets = 0;
        pthread_mutex_init(&f->lock, NULL);
        f->queue_head = f->queue_tail = NULL;
        f->stopping = false;
        f->active = NULL;
        f->npool = 0;
        f->multi = NULL;
        f->thread_started = false;
        r = fetch_start(f);
        if (r < 0 && f->multi) {
                curl_multi_cleanup(f->multi);
                f->multi = NULL;
        }
out:
        pthread_mutex_unlock(&fork_lock);
        return r;
}

void cairn_fetch_free(struct cairn_fetch *fetch)
{
        if (!fetch)
                return;
        if (fetch->thread_started && fetch_pid(fetch) != getpid()) {
                /* A child's copy that never ran: there is no thread to stop. */
                for (unsigned i = 0; i < fetch->nsockets; i++)
                        close(fetch->sockets[i]);
                free(fetch->ca_file);
                free(fetch);
                return;
        }
        if (fetch->thread_started) {
                pthread_mutex_lock(&fetch->lock);
                fetch->stopping = true;
                pthread_mutex_unlock(&fetch->lock);
                curl_multi_wakeup(fetch->multi);
                pthread_join(fetch->thread, NULL);
        }
        for (unsigned i = 0; i < fetch->npool; i++)
                curl_easy_cleanup(fetch->pool[i]);
        if (fetch->multi)
                curl_multi_cleanup(fetch->multi);
        pthread_mutex_destroy(&fetch->lock);
        free(fetch->ca_file);
        free(fetch);
}

int cairn_fetch_new(const struct cairn_fetch_options *opts, struct cairn_fetch **ret_fetch)
{
        struct cairn_fetch *f;
        int r;

        pthread_once(&curl_once, curl_init_once);
        if (curl_init_result != CURLE_OK)
                return -EIO;
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        pthread_mutex_init(&f->lock, NULL);
        if (opts)
                f->opts = *opts;
        options_resolve(&f->opts);
        if (f->opts.ca_file) {
                f->ca_file = strdup(f->opts.ca_file);
                if (!f->ca_file) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        f->opts.ca_file = f->ca_file;
        r = fetch_start(f);
        if (r < 0)
                goto fail;
        *ret_fetch = f;
        return 0;
fail:
        cairn_fetch_free(f);
        return r;
}

/*
 * The total length of a request's out_iov: false when the list is not one
 * (no array, none or too many entries, a NULL buffer, a sum that overflows).
 */
static bool iov_total(const struct cairn_fetch_request *q, uint64_t *ret_total)
{
        uint64_t total = 0;

        if (!q->out_iov || q->out_iovcnt == 0 || q->out_iovcnt > CAIRN_FETCH_IOV_MAX)
                return false;
        for (unsigned i = 0; i < q->out_iovcnt; i++) {
                size_t len = q->out_iov[i].iov_len;
                if (len && !q->out_iov[i].iov_base)
                        return false;
                if (total + len < total)
                        return false;
                total += len;
        }
        *ret_total = total;
        return true;
}

static bool request_valid(const struct cairn_fetch_request *q)
{
        static const char *const methods[] = {"GET", "HEAD", "PUT", "POST", "DELETE"};
        bool known = false;
        uint64_t iov_len = 0;

        if (!q || !q->method || !q->url || !*q->url)
                return false;
        for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
                if (!strcmp(q->method, methods[i]))
                        known = true;
        if (!known)
                return false;
        if (q->body_len && !q->body)
                return false;
        /* One destination: a buffer or a list of them, not both. */
        if (q->out_iov || q->out_iovcnt) {
                if (q->out || !iov_total(q, &iov_len))
                        return false;
        }
        if (q->range_len) {
                if (strcmp(q->method, "GET") != 0 ||
                    q->range_offset + q->range_len < q->range_offset)
                        return false;
                if (q->out && q->out_cap < q->range_len)
                        return false;
                if (q->out_iov && iov_len < q->range_len)
                        return false;
        }
        /* Streaming to an fd is for GET only: other methods are not resumable. */
        if (!q->out && !q->out_iov && q->out_fd >= 0 && q->out_fd_cap &&
            strcmp(q->method, "GET") != 0)
                return false;
        return true;
}

int cairn_fetch_submit(struct cairn_fetch *fetch, const struct cairn_fetch_request *req,
                       cairn_fetch_done_fn done, void *ctx)
{
        if (!fetch || !done || !request_valid(req))
                return -EINVAL;
        if (fetch_pid(fetch) != getpid()) {
                int r = fetch_restart_after_fork(fetch);
                if (r < 0)
                        return r;
        }
        struct fetch_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->req = *req;
        j->done = done;
        j->ctx = ctx;
        j->state = JOB_QUEUED;
        j->to_mem = req->out || req->out_iov;
        if (req->out)
                j->mem_cap = req->out_cap;
        else if (req->out_iov)
                iov_total(req, &j->mem_cap); /* request_valid() checked it */
        j->to_fd = !j->to_mem && req->out_fd >= 0 && req->out_fd_cap > 0;
        /* Blobs are immutable: ranged reads and fd streams pick up where an attempt broke off. */
        j->resumable = !strcmp(req->method, "GET") && (req->range_len || j->to_fd);
        j->known_total = UINT64_MAX;
        j->content_length = UINT64_MAX;
        j->deadline_ns = req->deadline_ns
                             ? req->deadline_ns
                             : cairn_fetch_now_ns() + (uint64_t)fetch->opts.deadline_ms * NS_PER_MS;

        pthread_mutex_lock(&fetch->lock);
        if (fetch->stopping) {
                pthread_mutex_unlock(&fetch->lock);
                free(j);
                return -ECANCELED;
        }
        if (fetch->queue_tail)
                fetch->queue_tail->next = j;
        else
                fetch->queue_head = j;
        fetch->queue_tail = j;
        pthread_mutex_unlock(&fetch->lock);
        curl_multi_wakeup(fetch->multi);
        return 0;
}

struct sync_wait {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;                            /* protected by lock */
        int result;                           /* protected by lock */
        struct cairn_fetch_response response; /* protected by lock */
};

static void sync_done(void *ctx, int result, const struct cairn_fetch_response *response)
{
        struct sync_wait *w = ctx;
        pthread_mutex_lock(&w->lock);
        w->result = result;
        w->response = *response;
        w->done = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

int cairn_fetch_do(struct cairn_fetch *fetch, const struct cairn_fetch_request *req,
                   struct cairn_fetch_response *ret_response)
{
        struct sync_wait w = {.done = false};
        pthread_condattr_t ca;
        int r;

        pthread_mutex_init(&w.lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w.cond, &ca);
        pthread_condattr_destroy(&ca);

        r = cairn_fetch_submit(fetch, req, sync_done, &w);
        if (r >= 0) {
                /* The event thread enforces the deadline: completion always comes. */
                pthread_mutex_lock(&w.lock);
                while (!w.done)
                        pthread_cond_wait(&w.cond, &w.lock);
                r = w.result;
                pthread_mutex_unlock(&w.lock);
                if (ret_response)
                        *ret_response = w.response;
        }
        pthread_cond_destroy(&w.cond);
        pthread_mutex_destroy(&w.lock);
        return r;
}
