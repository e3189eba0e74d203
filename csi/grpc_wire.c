/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC wire helpers: message prefixes, content types, status names and
 * grpc-message encoding (see grpc_wire.h).  Everything here reads bytes
 * that came off a socket, so every length is checked before use.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "grpc_wire.h"

static const char *const status_names[] = {
    [GRPC_STATUS_OK] = "OK",
    [GRPC_STATUS_CANCELLED] = "CANCELLED",
    [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
    [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
    [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [GRPC_STATUS_ABORTED] = "ABORTED",
    [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [GRPC_STATUS_INTERNAL] = "INTERNAL",
    [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
    [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
    [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *grpc_status_name(enum grpc_status status)
{
        if ((unsigned)status >= sizeof(status_names) / sizeof(status_names[0]))
                return "UNKNOWN";
        return status_names[status];
}

void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HEADER_SIZE], uint32_t len)
{
        hdr[0] = 0;
        hdr[1] = (uint8_t)(len >> 24);
        hdr[2] = (uint8_t)(len >> 16);
        hdr[3] = (uint8_t)(len >> 8);
        hdr[4] = (uint8_t)len;
}

int grpc_frame_peek(const uint8_t *buf, size_t len, bool *ret_compressed, uint32_t *ret_len)
{
        if (len < GRPC_FRAME_HEADER_SIZE)
                return -EAGAIN;
        if (buf[0] > 1)
                return -EBADMSG;
        *ret_compressed = buf[0] == 1;
        *ret_len = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 |
                   (uint32_t)buf[4];
        return 0;
}

int grpc_frame_parse_unary(const uint8_t *buf, size_t len, size_t max_len, const uint8_t **ret_msg,
                           size_t *ret_msg_len)
{
        bool compressed;
        uint32_t msg_len;
        int r;

        r = grpc_frame_peek(buf, len, &compressed, &msg_len);
        if (r == -EAGAIN)
                return -EBADMSG;
        if (r < 0)
                return r;
        if (msg_len > max_len)
                return -EMSGSIZE;
        if (len - GRPC_FRAME_HEADER_SIZE != msg_len)
                return -EBADMSG;
        if (compressed)
                return -EPROTONOSUPPORT;
        *ret_msg = buf + GRPC_FRAME_HEADER_SIZE;
        *ret_msg_len = msg_len;
        return 0;
}

bool grpc_content_type_ok(const char *value, size_t len)
{
        static const char base[] = "application/grpc";
        const size_t base_len = sizeof(base) - 1;
        size_t rest;

        if (len < base_len || strncasecmp(value, base, base_len) != 0)
                return false;
        value += base_len;
        rest = len - base_len;
        if (rest >= 6 && strncasecmp(value, "+proto", 6) == 0) {
                value += 6;
                rest -= 6;
        }
        return rest == 0 || value[0] == ';';
}

size_t grpc_percent_encode(const char *msg, char *out, size_t outlen)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        if (outlen == 0)
                return 0;
        for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
                if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
                        if (n + 1 >= outlen)
                                break;
                        out[n++] = (char)*p;
                } else {
                        if (n + 3 >= outlen)
                                break;
                        out[n++] = '%';
                        out[n++] = hex[*p >> 4];
                        out[n++] = hex[*p & 0xf];
                }
        }
        out[n] = '\0';
        return n;
}
