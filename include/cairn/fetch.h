/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fetch engine: every network byte cairn reads or writes goes through
 * here.  One engine per process owns a libcurl multi handle driven by one
 * event thread; any number of threads submit requests and either wait for
 * them (cairn_fetch_do) or get a completion callback (cairn_fetch_submit).
 * Connections are kept alive and reused, at most max_connections per host.
 *
 * Robustness is the engine's job, so that no caller has to get it right:
 * - every request has an absolute deadline; past it the request fails
 *   with -ETIMEDOUT whatever state it is in (connecting, stalled, retrying);
 * - retries with exponential backoff and full jitter, bounded attempts, on
 *   connection errors and resets, stalls (low-speed limit), 5xx, 429 and
 *   S3 "SlowDown", short bodies, a 200 where a 206 was asked, and a
 *   Content-Range that does not match the request;
 * - response bodies are written only into the caller's buffer of a known
 *   size (or a capped stream): a lying server cannot make us allocate;
 * - TLS peer and host verification are on unless `insecure` is set;
 * - a ranged GET, or a GET streamed into an fd, that breaks off is resumed
 *   where it stopped (blobs are immutable), not fetched again from the start;
 * - an engine inherited through fork() restarts in the child at its first
 *   request (threads do not survive fork), instead of waiting forever.
 *
 * Failures: -ENOENT (404), -EACCES (401/403: credentials or signature),
 * -ETIMEDOUT (deadline), -EFBIG (body over its cap), -EKEYREJECTED (the
 * server's TLS certificate could not be verified: no retry), -EIO (anything
 * else after the last attempt), -ENOMEM.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct cairn_fetch;

struct cairn_fetch_options {
        unsigned max_connections;     /* per host; 0: 8 */
        unsigned max_attempts;        /* 0: 6 */
        unsigned deadline_ms;         /* default per-request deadline; 0: 30000 */
        unsigned connect_timeout_ms;  /* per attempt; 0: 5000 */
        unsigned stall_timeout_ms;    /* abort an attempt that moves < 1 KiB/s this long; 0: 5000 */
        unsigned backoff_base_ms;     /* first retry delay cap; 0: 50 */
        unsigned backoff_max_ms;      /* 0: 2000 */
        const char *ca_file;          /* NULL: system bundle */
        bool insecure;                /* skip TLS verification (warned about by the front) */
};

/* Most iovecs one request may scatter its response body over. */
#define CAIRN_FETCH_IOV_MAX 1024u

/* One request header, "Name: value" as curl wants it. */
#define CAIRN_FETCH_MAX_HEADERS 16

struct cairn_fetch_request;

/*
 * Called before every attempt (so that a signature carries the attempt's
 * time) to add headers; S3 signs here.  Returns -errno to fail the request.
 */
typedef int (*cairn_fetch_sign_fn)(void *sign_ctx, const struct cairn_fetch_request *req,
                                   char headers[][512], unsigned *ret_nheaders);

struct cairn_fetch_request {
        const char *method;        /* "GET", "HEAD", "PUT", "POST", "DELETE" */
        const char *url;           /* full URL, path already percent-encoded */
        /* Ranged GET: expects 206 with exactly this range (range_len > 0). */
        uint64_t range_offset;
        uint64_t range_len;
        /* Request body (PUT/POST), not copied: must stay valid until completion. */
        const void *body;
        size_t body_len;
        /*
         * Response body: into out (out_cap bytes; more is -EFBIG), or into
         * out_iov (scattered over out_iovcnt buffers in order, 1 to
         * CAIRN_FETCH_IOV_MAX of them, their total length the cap; out must
         * then be NULL), or, when neither is set, to out_fd (GET only).  With
         * none of them, a success body of up to 64 KiB is dropped (more is
         * -EFBIG).  Byte k of the body always lands at position k of the
         * destination, whichever attempt delivered it.
         */
        void *out;
        size_t out_cap;
        const struct iovec *out_iov; /* the array and its buffers are borrowed, like out */
        unsigned out_iovcnt;
        int out_fd;                /* -1 when unused */
        uint64_t out_fd_cap;       /* cap on bytes streamed to out_fd; 0: out_fd unused (so
                                    * that a zeroed request never writes to fd 0) */
        uint64_t deadline_ns;      /* absolute CLOCK_MONOTONIC; 0: now + options.deadline_ms */
        cairn_fetch_sign_fn sign;  /* optional */
        void *sign_ctx;
        /* Extra fixed headers ("Name: value"), NULL-terminated; optional. */
        const char *const *headers;
};

struct cairn_fetch_response {
        long status;               /* last HTTP status, 0 if none */
        uint64_t body_len;         /* bytes delivered to out / out_fd */
        uint64_t content_length;   /* from the response, UINT64_MAX if absent */
        uint64_t total_size;       /* from Content-Range ".../total", UINT64_MAX if absent */
        char etag[130];            /* ETag header, quotes kept; "" if absent */
        char error_code[64];       /* S3 <Code> from an error body, "" if none */
        char error_message[256];   /* S3 <Message>, sanitized to printable ASCII */
        unsigned attempts;
};

int cairn_fetch_new(const struct cairn_fetch_options *opts, struct cairn_fetch **ret_fetch);
/* Fails pending requests with -ECANCELED, joins the event thread. */
void cairn_fetch_free(struct cairn_fetch *fetch);

/*
 * Synchronous: returns when the request completed, failed or hit its deadline.  Thread-safe.
 * ret_response (optional) is filled on failure too: status, attempts and the S3 error
 * code/message (or a transport error text) say why.
 */
int cairn_fetch_do(struct cairn_fetch *fetch, const struct cairn_fetch_request *req,
                   struct cairn_fetch_response *ret_response);

/*
 * Asynchronous: done(ctx, result, response) runs once on the event thread
 * (keep it short; never call cairn_fetch_do or cairn_fetch_free from it;
 * cairn_fetch_submit is fine).  The request struct is copied; the strings,
 * headers and buffers it points to must stay valid until then.  Returns
 * -errno without calling done when the request is refused (-EINVAL: bad
 * arguments, -ECANCELED: the engine is being freed).
 */
typedef void (*cairn_fetch_done_fn)(void *ctx, int result,
                                    const struct cairn_fetch_response *response);
int cairn_fetch_submit(struct cairn_fetch *fetch, const struct cairn_fetch_request *req,
                       cairn_fetch_done_fn done, void *ctx);

/* Monotonic clock in nanoseconds, the time base of deadline_ns. */
uint64_t cairn_fetch_now_ns(void);

/*
 * The default engine options, overridden by the environment where set:
 * CAIRN_FETCH_MAX_CONNECTIONS, CAIRN_FETCH_MAX_ATTEMPTS, CAIRN_FETCH_DEADLINE_MS,
 * CAIRN_FETCH_CONNECT_TIMEOUT_MS, CAIRN_FETCH_STALL_TIMEOUT_MS,
 * CAIRN_FETCH_BACKOFF_BASE_MS, CAIRN_FETCH_BACKOFF_MAX_MS (positive integers)
 * and CAIRN_CA_FILE.  `insecure` is never taken from the environment.
 */
void cairn_fetch_options_default(struct cairn_fetch_options *ret_opts);
