/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gRPC-over-HTTP/2 wire rules that do not need a connection: status
 * codes, the 5-byte message prefix (1 byte compressed flag, 4 bytes
 * big-endian length), the content-type test, and the percent-encoding of
 * grpc-message.  Pure functions, unit-tested on their own; the server in
 * grpc_server.c uses them on untrusted bytes.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The status codes of grpc/status.h, numbered as on the wire. */
enum grpc_status {
        GRPC_STATUS_OK = 0,
        GRPC_STATUS_CANCELLED = 1,
        GRPC_STATUS_UNKNOWN = 2,
        GRPC_STATUS_INVALID_ARGUMENT = 3,
        GRPC_STATUS_DEADLINE_EXCEEDED = 4,
        GRPC_STATUS_NOT_FOUND = 5,
        GRPC_STATUS_ALREADY_EXISTS = 6,
        GRPC_STATUS_PERMISSION_DENIED = 7,
        GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
        GRPC_STATUS_FAILED_PRECONDITION = 9,
        GRPC_STATUS_ABORTED = 10,
        GRPC_STATUS_OUT_OF_RANGE = 11,
        GRPC_STATUS_UNIMPLEMENTED = 12,
        GRPC_STATUS_INTERNAL = 13,
        GRPC_STATUS_UNAVAILABLE = 14,
        GRPC_STATUS_DATA_LOSS = 15,
        GRPC_STATUS_UNAUTHENTICATED = 16,
};

#define GRPC_FRAME_HEADER_SIZE 5

/* "INVALID_ARGUMENT", ...; "UNKNOWN" for a value outside the table. */
const char *grpc_status_name(enum grpc_status status);

/* Writes the prefix of an uncompressed message of len bytes. */
void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HEADER_SIZE], uint32_t len);

/*
 * Reads the prefix at buf (len >= 5 bytes available): the declared message
 * length and the compressed flag.  -EBADMSG if the flag byte is neither 0
 * nor 1; -EAGAIN if fewer than 5 bytes are there.
 */
int grpc_frame_peek(const uint8_t *buf, size_t len, bool *ret_compressed, uint32_t *ret_len);

/*
 * A unary request body: exactly one message, nothing after it.  On
 * success ret_msg points into buf.  -EBADMSG for a body that is empty,
 * truncated, has trailing bytes or a bad flag; -EMSGSIZE when the declared
 * length is over max_len; -EPROTONOSUPPORT when the message is compressed
 * (we announce no encodings, so a client must not compress).
 */
int grpc_frame_parse_unary(const uint8_t *buf, size_t len, size_t max_len, const uint8_t **ret_msg,
                           size_t *ret_msg_len);

/*
 * True for "application/grpc", "application/grpc+proto" and either
 * followed by ";parameters" (case-insensitive type, as HTTP says).  Other
 * gRPC subtypes (+json) are refused: we only speak protobuf.
 */
bool grpc_content_type_ok(const char *value, size_t len);

/*
 * Percent-encodes msg for the grpc-message trailer: bytes outside
 * 0x20..0x7e and '%' become %XX.  Writes at most outlen - 1 characters and
 * a NUL, never splitting an escape; returns the length written.
 */
size_t grpc_percent_encode(const char *msg, char *out, size_t outlen);
