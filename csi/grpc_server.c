/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unary gRPC over cleartext HTTP/2 on a unix socket (see grpc_server.h).
 *
 * The event loop thread owns every connection and every nghttp2 session:
 * nothing else touches them.  A request whose body is complete becomes a
 * job, handed to a new detached thread that decodes it, runs the handler
 * and encodes the response; the finished job is queued back (under
 * srv->lock) and the loop is woken through a pipe.  The job names its
 * stream by (connection id, stream id), never by pointer, so a client that
 * hung up or reset the stream in the meantime only makes the loop drop the
 * result.
 *
 * Responses: HEADERS (:status 200, content-type), one DATA frame with the
 * length-prefixed message, then trailers (grpc-status 0).  Errors are sent
 * as Trailers-Only (one HEADERS frame with END_STREAM carrying
 * grpc-status and the percent-encoded grpc-message).  A request that is
 * not gRPC at all gets a plain HTTP status: 415 for another content-type,
 * 405 for a method other than POST.
 *
 * Request bodies may carry secrets (CSI secrets maps): every buffer that
 * held request bytes is wiped before it is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "csi_status.h"
#include "grpc_server.h"

#define DEFAULT_MAX_MESSAGE    (4u * 1024 * 1024)
#define DEFAULT_MAX_CALLS      32u
#define MAX_CONNECTIONS        64u
#define MAX_CONCURRENT_STREAMS 100u
#define MAX_HEADER_BYTES       (16u * 1024)
#define READ_BUFFER_SIZE       (16u * 1024)
/* Volume ids are at most 256 bytes (csi_plugin.h). */
#define CSI_LOG_VOLUME_MAX 260

struct grpc_server;
struct grpc_conn;

/* A finished or running call; owned by its worker thread until queued on srv->done. */
struct grpc_job {
        struct grpc_server *srv;
        const struct grpc_method *method;
        uint64_t conn_id;
        int32_t stream_id;
        uint8_t *body; /* the whole request body (prefix included); wiped, freed */
        size_t body_len;
        uint8_t *resp; /* prefix + message on success */
        size_t resp_len;
        enum grpc_status status;
        char message[sizeof(((struct grpc_error *)0)->message)];
        struct grpc_job *next; /* on srv->done */
};

struct grpc_stream {
        int32_t id;
        char path[256];
        bool path_too_long;
        bool is_post;
        bool content_type_seen;
        bool content_type_ok;
        size_t header_bytes;
        uint8_t *body;
        size_t body_len;
        size_t body_cap;
        bool answered; /* a response was submitted or a job is running */
        /* The success response being sent by data_read(). */
        uint8_t *resp;
        size_t resp_len;
        size_t resp_off;
};

struct grpc_conn {
        struct grpc_server *srv;
        uint64_t id;
        int fd;
        nghttp2_session *session;
        bool dead;
        struct grpc_conn *next;
};

struct grpc_server {
        struct grpc_server_config cfg;
        char *socket_path;
        int listen_fd;
        int wake[2];
        int signal_fd;
        struct grpc_conn *conns;
        unsigned n_conns;
        uint64_t next_conn_id;
        pthread_mutex_t lock;
        pthread_cond_t idle;
        struct grpc_job *done; /* protected by lock */
        unsigned running;      /* protected by lock */
};

int grpc_fail(struct grpc_error *err, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return r;
}

ProtobufCMessage *grpc_response_new(const ProtobufCMessageDescriptor *desc)
{
        ProtobufCMessage *m = calloc(1, desc->sizeof_message);

        if (m)
                desc->message_init(m);
        return m;
}

static void wipe_free(void *p, size_t len)
{
        if (!p)
                return;
        explicit_bzero(p, len);
        free(p);
}

/*
 * Wipes the values of every map field named "secrets" (CSI marks those as
 * csi_secret) before the decoded request is freed.
 */
static void wipe_secrets(ProtobufCMessage *msg)
{
        const ProtobufCFieldDescriptor *f;
        ProtobufCMessage **entries;
        size_t n;

        f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "secrets");
        if (!f || f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
                return;
        n = *(size_t *)((char *)msg + f->quantifier_offset);
        entries = *(ProtobufCMessage ***)((char *)msg + f->offset);
        for (size_t i = 0; i < n; i++) {
                const ProtobufCFieldDescriptor *vf =
                    protobuf_c_message_descriptor_get_field_by_name(entries[i]->descriptor,
                                                                    "value");
                char *value;

                if (!vf || vf->type != PROTOBUF_C_TYPE_STRING)
                        continue;
                value = *(char **)((char *)entries[i] + vf->offset);
                if (value && value[0])
                        explicit_bzero(value, strlen(value));
        }
}

/* The request's volume for the log line: "volume_id", or CreateVolume's "name". */
static const char *request_volume(const ProtobufCMessage *msg)
{
        static const char *const names[] = {"volume_id", "name"};

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                const ProtobufCFieldDescriptor *f =
                    protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, names[i]);
                if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED)
                        return *(const char **)((const char *)msg + f->offset);
        }
        return NULL;
}

/* Copies s for a log line: printable ASCII only, at most outlen - 1 bytes. */
static void log_safe(const char *s, char *out, size_t outlen)
{
        size_t n = 0;

        for (; s && *s && n + 1 < outlen; s++)
                out[n++] = (*s >= 0x20 && *s <= 0x7e) ? *s : '?';
        out[n] = '\0';
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void job_finish(struct grpc_job *job)
{
        struct grpc_server *srv = job->srv;
        char one = 1;

        pthread_mutex_lock(&srv->lock);
        job->next = srv->done;
        srv->done = job;
        srv->running--;
        if (srv->running == 0)
                pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
        /* A full pipe already holds a wakeup: EAGAIN is fine. */
        if (write(srv->wake[1], &one, 1) < 0 && errno != EAGAIN)
                cairn_debug("cannot wake the event loop: %s", strerror(errno));
}

static void *job_run(void *arg)
{
        struct grpc_job *job = arg;
        const struct grpc_method *m = job->method;
        struct grpc_error err = {.message = ""};
        ProtobufCMessage *req = NULL, *resp = NULL;
        char volume[CSI_LOG_VOLUME_MAX] = "", reason[sizeof(err.message)];
        uint64_t start = now_ms();
        int r;

        req = protobuf_c_message_unpack(m->input, NULL, job->body_len - GRPC_FRAME_HEADER_SIZE,
                                        job->body + GRPC_FRAME_HEADER_SIZE);
        wipe_free(job->body, job->body_len);
        job->body = NULL;
        if (!req) {
                r = grpc_fail(&err, -EBADMSG, "cannot decode the request as %s", m->input->name);
        } else {
                log_safe(request_volume(req), volume, sizeof(volume));
                r = m->handler(job->srv->cfg.userdata, req, &resp, &err);
                wipe_secrets(req);
                protobuf_c_message_free_unpacked(req, NULL);
        }
        if (r >= 0 && resp) {
                size_t size = protobuf_c_message_get_packed_size(resp);

                job->resp = size <= UINT32_MAX ? malloc(GRPC_FRAME_HEADER_SIZE + size) : NULL;
                if (job->resp) {
                        grpc_frame_header(job->resp, (uint32_t)size);
                        protobuf_c_message_pack(resp, job->resp + GRPC_FRAME_HEADER_SIZE);
                        job->resp_len = GRPC_FRAME_HEADER_SIZE + size;
                } else {
                        r = grpc_fail(&err, -ENOMEM, "cannot encode the response");
                }
                protobuf_c_message_free_unpacked(resp, NULL);
        } else if (r >= 0) {
                r = grpc_fail(&err, -EFAULT, "handler returned no response");
        } else if (resp) {
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        job->status = csi_status_from_errno(r);
        if (job->status != GRPC_STATUS_OK) {
                if (!err.message[0])
                        snprintf(err.message, sizeof(err.message), "%s", strerror(-r));
                memcpy(job->message, err.message, sizeof(job->message));
        }
        log_safe(err.message, reason, sizeof(reason));
        if (job->status == GRPC_STATUS_OK)
                cairn_log(m->quiet ? LOG_DEBUG : LOG_INFO, "%s volume '%s': OK (%" PRIu64 " ms)",
                          m->path, volume, now_ms() - start);
        else
                cairn_log(m->quiet ? LOG_DEBUG : LOG_WARNING,
                          "%s volume '%s': %s: %s (%" PRIu64 " ms)", m->path, volume,
                          grpc_status_name(job->status), reason, now_ms() - start);
        job_finish(job);
        return NULL;
}

static void stream_free(struct grpc_stream *s)
{
        if (!s)
                return;
        wipe_free(s->body, s->body_cap);
        free(s->resp);
        free(s);
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
        nv->name = (uint8_t *)name;
        nv->namelen = strlen(name);
        nv->value = (uint8_t *)value;
        nv->valuelen = strlen(value);
        nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/* A plain HTTP answer for requests that are not gRPC at all. */
static void respond_http(struct grpc_conn *c, struct grpc_stream *s, const char *status)
{
        nghttp2_nv nv[1];

        nv_set(&nv[0], ":status", status);
        s->answered = true;
        if (nghttp2_submit_response(c->session, s->id, nv, 1, NULL) != 0)
                nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id,
                                          NGHTTP2_INTERNAL_ERROR);
}

/* Trailers-Only: status and message in the one HEADERS frame that ends the stream. */
static void respond_status(struct grpc_conn *c, int32_t stream_id, enum grpc_status status,
                           const char *message)
{
        char code[16], encoded[1024];
        nghttp2_nv nv[4];
        size_t n = 0;

        snprintf(code, sizeof(code), "%d", (int)status);
        nv_set(&nv[n++], ":status", "200");
        nv_set(&nv[n++], "content-type", "application/grpc");
        nv_set(&nv[n++], "grpc-status", code);
        if (message && message[0]) {
                grpc_percent_encode(message, encoded, sizeof(encoded));
                nv_set(&nv[n++], "grpc-message", encoded);
        }
        /* nghttp2 copies the header block, so the stack buffers may go. */
        if (nghttp2_submit_response(c->session, stream_id, nv, n, NULL) != 0)
                nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, stream_id,
                                          NGHTTP2_INTERNAL_ERROR);
}

static void stream_fail(struct grpc_conn *c, struct grpc_stream *s, int r, const char *message)
{
        s->answered = true;
        wipe_free(s->body, s->body_cap);
        s->body = NULL;
        s->body_len = s->body_cap = 0;
        respond_status(c, s->id, csi_status_from_errno(r), message);
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
        struct grpc_stream *s = source->ptr;
        size_t n = s->resp_len - s->resp_off;
        nghttp2_nv trailer[1];

        (void)user_data;
        if (n > length)
                n = length;
        memcpy(buf, s->resp + s->resp_off, n);
        s->resp_off += n;
        if (s->resp_off == s->resp_len) {
                /* The stream ends with the trailers, not with this DATA frame. */
                *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                nv_set(&trailer[0], "grpc-status", "0");
                if (nghttp2_submit_trailer(session, stream_id, trailer, 1) != 0)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
}

static void respond_ok(struct grpc_conn *c, struct grpc_stream *s, uint8_t *resp, size_t len)
{
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
        nghttp2_nv nv[3];

        s->resp = resp;
        s->resp_len = len;
        s->resp_off = 0;
        nv_set(&nv[0], ":status", "200");
        nv_set(&nv[1], "content-type", "application/grpc");
        nv_set(&nv[2], "grpc-accept-encoding", "identity");
        if (nghttp2_submit_response(c->session, s->id, nv, 3, &prd) != 0)
                nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id,
                                          NGHTTP2_INTERNAL_ERROR);
}

static const struct grpc_method *find_method(const struct grpc_server *srv, const char *path)
{
        for (size_t i = 0; i < srv->cfg.n_methods; i++)
                if (strcmp(srv->cfg.methods[i].path, path) == 0)
                        return &srv->cfg.methods[i];
        return NULL;
}

/* The request is complete: check its framing and hand it to a worker. */
static void dispatch(struct grpc_conn *c, struct grpc_stream *s)
{
        struct grpc_server *srv = c->srv;
        const struct grpc_method *m;
        const uint8_t *msg;
        struct grpc_job *job;
        pthread_attr_t attr;
        pthread_t thread;
        size_t msg_len;
        bool full;
        int r;

        if (s->answered)
                return;
        m = find_method(srv, s->path);
        if (!m) {
                char text[300];

                snprintf(text, sizeof(text), "unknown method '%s'", s->path);
                stream_fail(c, s, -EOPNOTSUPP, text);
                return;
        }
        r = grpc_frame_parse_unary(s->body, s->body_len, srv->cfg.max_message, &msg, &msg_len);
        if (r < 0) {
                stream_fail(c, s, r,
                            r == -EMSGSIZE          ? "request message too large"
                            : r == -EPROTONOSUPPORT ? "compressed messages are not supported"
                                                    : "expected exactly one request message");
                return;
        }
        pthread_mutex_lock(&srv->lock);
        full = srv->running >= srv->cfg.max_calls;
        if (!full)
                srv->running++;
        pthread_mutex_unlock(&srv->lock);
        if (full) {
                stream_fail(c, s, -EAGAIN, "too many calls in progress");
                return;
        }
        job = calloc(1, sizeof(*job));
        if (!job)
                goto fail;
        job->srv = srv;
        job->method = m;
        job->conn_id = c->id;
        job->stream_id = s->id;
        /* The body moves to the job; the stream keeps nothing to wipe. */
        job->body = s->body;
        job->body_len = s->body_len;
        if (pthread_attr_init(&attr) != 0)
                goto fail;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&thread, &attr, job_run, job);
        pthread_attr_destroy(&attr);
        if (r != 0)
                goto fail;
        s->body = NULL;
        s->body_len = s->body_cap = 0;
        s->answered = true;
        return;
fail:
        free(job);
        pthread_mutex_lock(&srv->lock);
        srv->running--;
        pthread_mutex_unlock(&srv->lock);
        stream_fail(c, s, -EAGAIN, "cannot start a worker thread");
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
        struct grpc_conn *c = user_data;
        ssize_t n;

        (void)session;
        (void)flags;
        n = send(c->fd, data, length, MSG_NOSIGNAL);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
        return n;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
        struct grpc_stream *s;

        (void)user_data;
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        s = calloc(1, sizeof(*s));
        if (!s)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        s->id = frame->hd.stream_id;
        nghttp2_session_set_stream_user_data(session, s->id, s);
        return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
        struct grpc_stream *s;

        (void)flags;
        (void)user_data;
        if (frame->hd.type != NGHTTP2_HEADERS)
                return 0;
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!s)
                return 0;
        /* RFC 7541's size of a header: name + value + 32. */
        s->header_bytes += namelen + valuelen + 32;
        if (s->header_bytes > MAX_HEADER_BYTES)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
        if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0; /* trailers from the client carry nothing we use */
        if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
                if (valuelen >= sizeof(s->path)) {
                        s->path_too_long = true;
                } else {
                        memcpy(s->path, value, valuelen);
                        s->path[valuelen] = '\0';
                }
        } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
                s->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
        } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
                s->content_type_seen = true;
                s->content_type_ok = grpc_content_type_ok((const char *)value, valuelen);
        }
        return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
        struct grpc_conn *c = user_data;
        struct grpc_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
        size_t limit = c->srv->cfg.max_message + GRPC_FRAME_HEADER_SIZE;
        bool compressed;
        uint32_t declared;

        (void)flags;
        if (!s || s->answered)
                return 0;
        if (len > limit - s->body_len) {
                stream_fail(c, s, -EMSGSIZE, "request message too large");
                return 0;
        }
        if (s->body_len + len > s->body_cap) {
                size_t cap = s->body_cap ? s->body_cap : 1024;
                uint8_t *p;

                while (cap < s->body_len + len)
                        cap *= 2;
                if (cap > limit)
                        cap = limit;
                /* Not realloc: the old buffer may hold a secret and must be wiped. */
                p = malloc(cap);
                if (!p) {
                        stream_fail(c, s, -ENOMEM, "out of memory");
                        return 0;
                }
                if (s->body_len)
                        memcpy(p, s->body, s->body_len);
                wipe_free(s->body, s->body_cap);
                s->body = p;
                s->body_cap = cap;
        }
        memcpy(s->body + s->body_len, data, len);
        s->body_len += len;
        /* Refuse an oversized message as soon as its prefix says so. */
        if (grpc_frame_peek(s->body, s->body_len, &compressed, &declared) == 0 &&
            declared > c->srv->cfg.max_message)
                stream_fail(c, s, -EMSGSIZE, "request message too large");
        return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
        struct grpc_conn *c = user_data;
        struct grpc_stream *s;

        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
                return 0;
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!s || s->answered)
                return 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
                if (!s->is_post) {
                        respond_http(c, s, "405");
                        return 0;
                }
                if (!s->content_type_seen || !s->content_type_ok) {
                        respond_http(c, s, "415");
                        return 0;
                }
                if (s->path_too_long || !find_method(c->srv, s->path)) {
                        char text[300];

                        snprintf(text, sizeof(text), "unknown method '%s'",
                                 s->path_too_long ? "(too long)" : s->path);
                        stream_fail(c, s, -EOPNOTSUPP, text);
                        return 0;
                }
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
                dispatch(c, s);
        return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
        struct grpc_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);

        (void)error_code;
        (void)user_data;
        if (s) {
                nghttp2_session_set_stream_user_data(session, stream_id, NULL);
                stream_free(s);
        }
        return 0;
}

static void conn_free(struct grpc_conn *c)
{
        if (!c)
                return;
        /* nghttp2_session_del() closes the streams, which frees them. */
        if (c->session)
                nghttp2_session_del(c->session);
        if (c->fd >= 0)
                close(c->fd);
        free(c);
}

static int conn_new(struct grpc_server *srv, int fd, struct grpc_conn **ret_conn)
{
        nghttp2_settings_entry settings[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS},
            {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES},
        };
        nghttp2_session_callbacks *cbs = NULL;
        struct grpc_conn *c;
        int r = -ENOMEM;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->srv = srv;
        c->fd = fd;
        c->id = ++srv->next_conn_id;
        if (nghttp2_session_callbacks_new(&cbs) != 0)
                goto out;
        nghttp2_session_callbacks_set_send_callback(cbs, on_send);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
        if (nghttp2_session_server_new(&c->session, cbs, c) != 0)
                goto out;
        if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings,
                                    sizeof(settings) / sizeof(settings[0])) != 0)
                goto out;
        *ret_conn = c;
        c = NULL;
        r = 0;
out:
        nghttp2_session_callbacks_del(cbs);
        if (c) {
                c->fd = -1; /* the caller still owns fd on failure */
                conn_free(c);
        }
        return r;
}

/* Sends what nghttp2 has queued; marks the connection dead on a fatal error. */
static void conn_flush(struct grpc_conn *c)
{
        if (c->dead)
                return;
        if (nghttp2_session_send(c->session) != 0)
                c->dead = true;
        else if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
                c->dead = true;
}

static void conn_read(struct grpc_conn *c)
{
        uint8_t buf[READ_BUFFER_SIZE];
        ssize_t n;

        for (;;) {
                n = recv(c->fd, buf, sizeof(buf), 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                c->dead = true;
                        break;
                }
                if (n == 0) {
                        c->dead = true;
                        break;
                }
                if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0)
                        c->dead = true;
                if (c->dead || (size_t)n < sizeof(buf))
                        break;
        }
        /* The bytes may have been part of a request that carried secrets. */
        explicit_bzero(buf, sizeof(buf));
        conn_flush(c);
}

static void accept_connections(struct grpc_server *srv)
{
        while (srv->n_conns < MAX_CONNECTIONS) {
                struct grpc_conn *c;
                int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (fd < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                cairn_warn("cannot accept a connection: %s", strerror(errno));
                        return;
                }
                if (conn_new(srv, fd, &c) < 0) {
                        cairn_warn("cannot set up a connection: %s", strerror(ENOMEM));
                        close(fd);
                        continue;
                }
                c->next = srv->conns;
                srv->conns = c;
                srv->n_conns++;
                conn_flush(c);
        }
}

static struct grpc_conn *find_conn(struct grpc_server *srv, uint64_t id)
{
        for (struct grpc_conn *c = srv->conns; c; c = c->next)
                if (c->id == id)
                        return c;
        return NULL;
}

static void job_free(struct grpc_job *job)
{
        if (!job)
                return;
        wipe_free(job->body, job->body_len);
        free(job->resp);
        free(job);
}

/* Sends the results of finished jobs whose stream is still open. */
static void deliver_jobs(struct grpc_server *srv)
{
        struct grpc_job *job, *next;
        char buf[64];

        while (read(srv->wake[0], buf, sizeof(buf)) > 0)
                ;
        pthread_mutex_lock(&srv->lock);
        job = srv->done;
        srv->done = NULL;
        pthread_mutex_unlock(&srv->lock);
        for (; job; job = next) {
                struct grpc_conn *c = find_conn(srv, job->conn_id);
                struct grpc_stream *s = NULL;

                next = job->next;
                if (c && !c->dead)
                        s = nghttp2_session_get_stream_user_data(c->session, job->stream_id);
                if (s) {
                        if (job->status == GRPC_STATUS_OK) {
                                respond_ok(c, s, job->resp, job->resp_len);
                                job->resp = NULL;
                        } else {
                                respond_status(c, s->id, job->status, job->message);
                        }
                        conn_flush(c);
                }
                job_free(job);
        }
}

static void reap_dead_connections(struct grpc_server *srv)
{
        struct grpc_conn **pp = &srv->conns;

        while (*pp) {
                struct grpc_conn *c = *pp;

                if (c->dead) {
                        *pp = c->next;
                        srv->n_conns--;
                        conn_free(c);
                } else {
                        pp = &c->next;
                }
        }
}

/* Returns true when the server must stop. */
static bool handle_signals(struct grpc_server *srv)
{
        struct signalfd_siginfo si;
        bool stop = false;

        while (read(srv->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGCHLD) {
                        if (srv->cfg.on_child)
                                srv->cfg.on_child(srv->cfg.userdata);
                } else {
                        cairn_info("stopping on %s", strsignal((int)si.ssi_signo));
                        stop = true;
                }
        }
        return stop;
}

int grpc_server_run(struct grpc_server *srv)
{
        struct pollfd *pfds = NULL;
        struct grpc_conn **pconns = NULL;
        size_t cap = 0;
        int r = 0;

        for (;;) {
                size_t n = 0, need = 3 + srv->n_conns;

                if (need > cap) {
                        struct pollfd *p = realloc(pfds, need * sizeof(*pfds));
                        struct grpc_conn **q;

                        if (!p) {
                                r = -ENOMEM;
                                break;
                        }
                        pfds = p;
                        q = realloc(pconns, need * sizeof(*pconns));
                        if (!q) {
                                r = -ENOMEM;
                                break;
                        }
                        pconns = q;
                        cap = need;
                }
                pfds[n++] = (struct pollfd){.fd = srv->signal_fd, .events = POLLIN};
                pfds[n++] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};
                /* At the connection limit the backlog holds newcomers. */
                pfds[n++] = (struct pollfd){
                    .fd = srv->n_conns < MAX_CONNECTIONS ? srv->listen_fd : -1, .events = POLLIN};
                for (struct grpc_conn *c = srv->conns; c; c = c->next) {
                        short ev = 0;

                        if (nghttp2_session_want_read(c->session))
                                ev |= POLLIN;
                        if (nghttp2_session_want_write(c->session))
                                ev |= POLLOUT;
                        pconns[n] = c;
                        pfds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
                }
                if (poll(pfds, n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if ((pfds[0].revents & POLLIN) && handle_signals(srv))
                        break;
                if (pfds[1].revents & POLLIN)
                        deliver_jobs(srv);
                if (pfds[2].revents & POLLIN)
                        accept_connections(srv);
                for (size_t i = 3; i < n; i++) {
                        struct grpc_conn *c = pconns[i];

                        if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
                                conn_read(c);
                        if (!c->dead && (pfds[i].revents & POLLOUT))
                                conn_flush(c);
                }
                reap_dead_connections(srv);
        }
        free(pfds);
        free(pconns);
        return r;
}

static int bind_socket(const char *path, int *ret_fd)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        struct stat st;
        int fd, r;

        if (strlen(path) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        memcpy(addr.sun_path, path, strlen(path) + 1);
        /* A socket left by a previous run is ours to replace; anything else is not. */
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                if (unlink(path) < 0)
                        return -errno;
        } else if (errno != ENOENT) {
                return -errno;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

int grpc_server_new(const struct grpc_server_config *cfg, struct grpc_server **ret_server)
{
        struct grpc_server *srv;
        sigset_t mask;
        int r;

        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->cfg = *cfg;
        if (!srv->cfg.max_message)
                srv->cfg.max_message = DEFAULT_MAX_MESSAGE;
        if (!srv->cfg.max_calls)
                srv->cfg.max_calls = DEFAULT_MAX_CALLS;
        srv->listen_fd = srv->signal_fd = srv->wake[0] = srv->wake[1] = -1;
        pthread_mutex_init(&srv->lock, NULL);
        pthread_cond_init(&srv->idle, NULL);
        srv->socket_path = strdup(cfg->socket_path);
        if (!srv->socket_path) {
                r = -ENOMEM;
                goto fail;
        }
        /* Blocked here, before any thread exists, so every thread inherits the mask. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                r = -errno;
                goto fail;
        }
        srv->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (srv->signal_fd < 0 || pipe2(srv->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
                r = -errno;
                goto fail;
        }
        r = bind_socket(cfg->socket_path, &srv->listen_fd);
        if (r < 0)
                goto fail;
        *ret_server = srv;
        return 0;
fail:
        grpc_server_free(srv);
        return r;
}

void grpc_server_free(struct grpc_server *srv)
{
        struct grpc_job *job, *next;

        if (!srv)
                return;
        if (srv->listen_fd >= 0) {
                close(srv->listen_fd);
                unlink(srv->socket_path);
        }
        while (srv->conns) {
                struct grpc_conn *c = srv->conns;

                srv->conns = c->next;
                conn_free(c);
        }
        srv->n_conns = 0;
        /*
         * Running handlers use srv and what userdata points to: wait for
         * them.  Every wait in a handler is bounded (a mount by its
         * timeout), so this ends.
         */
        pthread_mutex_lock(&srv->lock);
        if (srv->running > 0)
                cairn_info("waiting for %u call(s) in progress", srv->running);
        while (srv->running > 0)
                pthread_cond_wait(&srv->idle, &srv->lock);
        job = srv->done;
        srv->done = NULL;
        pthread_mutex_unlock(&srv->lock);
        for (; job; job = next) {
                next = job->next;
                job_free(job);
        }
        if (srv->signal_fd >= 0)
                close(srv->signal_fd);
        if (srv->wake[0] >= 0)
                close(srv->wake[0]);
        if (srv->wake[1] >= 0)
                close(srv->wake[1]);
        pthread_cond_destroy(&srv->idle);
        pthread_mutex_destroy(&srv->lock);
        free(srv->socket_path);
        free(srv);
}
