/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC wire rules of cairn-csi (csi/grpc_wire.c): the 5-byte message
 * prefix of unary request bodies (exactly one message, the length cap, the
 * compressed flag, truncated and trailing bytes), the content-types that
 * count as gRPC, the percent-encoding of grpc-message (every byte outside
 * printable ASCII and '%' escaped, never an escape cut in half), and the
 * status names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_wire.h"

static void test_header(void **state)
{
        uint8_t hdr[GRPC_FRAME_HEADER_SIZE];
        uint32_t len;
        bool compressed;

        (void)state;
        grpc_frame_header(hdr, 0x01020304);
        assert_int_equal(hdr[0], 0);
        assert_int_equal(hdr[1], 1);
        assert_int_equal(hdr[4], 4);
        assert_int_equal(grpc_frame_peek(hdr, sizeof(hdr), &compressed, &len), 0);
        assert_false(compressed);
        assert_int_equal(len, 0x01020304);
        grpc_frame_header(hdr, UINT32_MAX);
        assert_int_equal(grpc_frame_peek(hdr, sizeof(hdr), &compressed, &len), 0);
        assert_int_equal(len, UINT32_MAX);
        /* Fewer than 5 bytes: wait for more. */
        assert_int_equal(grpc_frame_peek(hdr, 4, &compressed, &len), -EAGAIN);
        assert_int_equal(grpc_frame_peek(hdr, 0, &compressed, &len), -EAGAIN);
        hdr[0] = 1;
        assert_int_equal(grpc_frame_peek(hdr, sizeof(hdr), &compressed, &len), 0);
        assert_true(compressed);
        hdr[0] = 2;
        assert_int_equal(grpc_frame_peek(hdr, sizeof(hdr), &compressed, &len), -EBADMSG);
}

static void test_parse_unary(void **state)
{
        uint8_t body[5 + 3] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
        const uint8_t *msg = NULL;
        size_t len = 99;

        (void)state;
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 16, &msg, &len), 0);
        assert_ptr_equal(msg, body + 5);
        assert_int_equal(len, 3);
        /* An empty message is still one message. */
        body[4] = 0;
        assert_int_equal(grpc_frame_parse_unary(body, 5, 16, &msg, &len), 0);
        assert_int_equal(len, 0);
        body[4] = 3;
        /* Truncated, trailing bytes, no prefix at all. */
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body) - 1, 16, &msg, &len), -EBADMSG);
        assert_int_equal(grpc_frame_parse_unary(body, 3, 16, &msg, &len), -EBADMSG);
        assert_int_equal(grpc_frame_parse_unary(body, 0, 16, &msg, &len), -EBADMSG);
        body[4] = 2;
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 16, &msg, &len), -EBADMSG);
        /* Two messages are not one. */
        {
                uint8_t two[12] = {0, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 1, 'y'};

                assert_int_equal(grpc_frame_parse_unary(two, sizeof(two), 16, &msg, &len),
                                 -EBADMSG);
        }
        /* The cap counts the declared length, before any byte arrives. */
        body[4] = 3;
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 2, &msg, &len), -EMSGSIZE);
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 3, &msg, &len), 0);
        {
                uint8_t huge[5] = {0, 0xff, 0xff, 0xff, 0xff};

                assert_int_equal(grpc_frame_parse_unary(huge, sizeof(huge), 4u << 20, &msg, &len),
                                 -EMSGSIZE);
        }
        body[0] = 1;
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 16, &msg, &len),
                         -EPROTONOSUPPORT);
        body[0] = 7;
        assert_int_equal(grpc_frame_parse_unary(body, sizeof(body), 16, &msg, &len), -EBADMSG);
        /* ret_* untouched on failure. */
        assert_ptr_equal(msg, body + 5);
        assert_int_equal(len, 3);
}

static void test_content_type(void **state)
{
        static const char *const good[] = {
            "application/grpc",      "application/grpc+proto",
            "application/grpc; x=1", "application/grpc+proto;charset=utf-8",
            "Application/GRPC",      "application/grpc;",
        };
        static const char *const bad[] = {
            "",
            "application/json",
            "application/grpc+json",
            "application/grpcx",
            "application/grpc-web",
            "application/grp",
            "text/plain",
            "application/grpc+protobuf",
        };

        (void)state;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                assert_true(grpc_content_type_ok(good[i], strlen(good[i])));
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_false(grpc_content_type_ok(bad[i], strlen(bad[i])));
        /* The length is honoured: no NUL terminator needed, none read past. */
        assert_true(grpc_content_type_ok("application/grpcXYZ", 16));
        assert_false(grpc_content_type_ok("application/grpc", 15));
}

static void test_percent_encode(void **state)
{
        char out[64];

        (void)state;
        assert_int_equal(grpc_percent_encode("plain text: ok", out, sizeof(out)), 14);
        assert_string_equal(out, "plain text: ok");
        grpc_percent_encode("100% done\n", out, sizeof(out));
        assert_string_equal(out, "100%25 done%0A");
        grpc_percent_encode("caf\xc3\xa9\x7f\x01~ ", out, sizeof(out));
        assert_string_equal(out, "caf%C3%A9%7F%01~ ");
        /* Never half an escape: "ab%0A" does not fit in 5 bytes + NUL... */
        assert_int_equal(grpc_percent_encode("ab\ncd", out, 5), 2);
        assert_string_equal(out, "ab");
        assert_int_equal(grpc_percent_encode("ab\ncd", out, 6), 5);
        assert_string_equal(out, "ab%0A");
        assert_int_equal(grpc_percent_encode("abc", out, 1), 0);
        assert_string_equal(out, "");
        assert_int_equal(grpc_percent_encode("", out, sizeof(out)), 0);
}

static void test_status_names(void **state)
{
        (void)state;
        assert_string_equal(grpc_status_name(GRPC_STATUS_OK), "OK");
        assert_string_equal(grpc_status_name(GRPC_STATUS_INVALID_ARGUMENT), "INVALID_ARGUMENT");
        assert_string_equal(grpc_status_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
        assert_string_equal(grpc_status_name((enum grpc_status)17), "UNKNOWN");
        assert_string_equal(grpc_status_name((enum grpc_status) - 1), "UNKNOWN");
        /* The wire numbers of grpc/status.h. */
        assert_int_equal(GRPC_STATUS_NOT_FOUND, 5);
        assert_int_equal(GRPC_STATUS_ABORTED, 10);
        assert_int_equal(GRPC_STATUS_UNIMPLEMENTED, 12);
        assert_int_equal(GRPC_STATUS_UNAVAILABLE, 14);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_header),       cmocka_unit_test(test_parse_unary),
            cmocka_unit_test(test_content_type), cmocka_unit_test(test_percent_encode),
            cmocka_unit_test(test_status_names),
        };
        return cmocka_run_group_tests_name("csi_wire", tests, NULL, NULL);
}
