/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small unary-only gRPC server: cleartext HTTP/2 (nghttp2) on a unix
 * socket, protobuf-c messages.  One thread runs the event loop (poll over
 * the listening socket, the connections, a wakeup pipe and a signalfd);
 * each call runs its handler on a thread of its own, so that a slow call
 * (a mount fetching a manifest) never holds up another connection or
 * another call on the same connection.  Handlers are looked up by the
 * request's :path ("/csi.v1.Node/NodeStageVolume").
 *
 * Limits: request messages over max_message bytes are refused with
 * RESOURCE_EXHAUSTED; at most max_calls handlers run at once (more calls
 * get RESOURCE_EXHAUSTED at once); headers over 16 KiB reset the stream;
 * at most 64 connections are open.
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "grpc_wire.h"

/* What a handler reports besides its -errno: the grpc-message text. */
struct grpc_error {
        char message[512];
};

/*
 * Runs on a worker thread.  req is the decoded request (borrowed; the
 * server frees it, after wiping the strings of any field named "secrets").
 * On success *ret_resp is a response message allocated with
 * protobuf_c_message-compatible malloc'ed memory that the server frees
 * with the descriptor's free function (handlers build responses with
 * grpc_response_new()).  On failure: -errno, the status comes from
 * csi_status_from_errno(), err->message says why (never a secret).
 */
typedef int (*grpc_handler_t)(void *userdata, const ProtobufCMessage *req,
                              ProtobufCMessage **ret_resp, struct grpc_error *err);

struct grpc_method {
        const char *path; /* "/package.Service/Method" */
        const ProtobufCMessageDescriptor *input;
        grpc_handler_t handler;
        bool quiet; /* log at LOG_DEBUG: polled by probes every few seconds */
};

struct grpc_server_config {
        const char *socket_path;
        const struct grpc_method *methods;
        size_t n_methods;
        void *userdata;     /* passed to every handler */
        size_t max_message; /* bytes; 0: 4 MiB */
        unsigned max_calls; /* 0: 32 */
        /* Called on the event loop thread on SIGCHLD (NULL: nothing). */
        void (*on_child)(void *userdata);
};

struct grpc_server;

/*
 * Binds the unix socket (a stale socket at the path is replaced; any other
 * file there is an error) and blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP
 * in the calling thread, which must be the process's only thread so far.
 */
int grpc_server_new(const struct grpc_server_config *cfg, struct grpc_server **ret_server);
/* Serves until SIGTERM, SIGINT or SIGHUP; returns 0 then, -errno on failure. */
int grpc_server_run(struct grpc_server *srv);
/* Closes the socket (and unlinks it) and the connections; waits for running calls. */
void grpc_server_free(struct grpc_server *srv);

/*
 * Returns a zero-initialized message of the given type (protobuf_c
 * defaults applied), or NULL when out of memory.  Handlers fill it;
 * strings and sub-messages they hang on it must be malloc'ed, since the
 * server frees the response with protobuf_c_message_free_unpacked().
 */
ProtobufCMessage *grpc_response_new(const ProtobufCMessageDescriptor *desc);

/* Formats err->message; always returns r (a -errno), for `return grpc_fail(...)`. */
int grpc_fail(struct grpc_error *err, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
