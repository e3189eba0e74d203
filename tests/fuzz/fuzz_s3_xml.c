/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the S3 XML parsers (error bodies and the upload id
 * of CreateMultipartUpload), which read whatever a server sends.
 *
 * Beyond "no crash, no read past the input" (the input is copied into a
 * buffer of exactly its size), the target checks the contract callers
 * rely on: results are 0 or the documented errors; outputs are untouched
 * on failure; on success they are NUL-terminated printable ASCII (they end
 * up in log lines and error messages), the code is never empty, and a
 * smaller output buffer gives a prefix of what a larger one gives.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/s3.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_s3_xml: check failed: %s (line %d)\n", #cond,        \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

#define SENTINEL 0x5a

static bool untouched(const char *buf, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (buf[i] != SENTINEL)
                        return false;
        return true;
}

/* NUL within len, printable ASCII before it. */
static void check_text(const char *buf, size_t len)
{
        const char *nul = memchr(buf, '\0', len);
        CHECK(nul != NULL);
        for (const char *p = buf; p < nul; p++)
                CHECK(*p >= 0x20 && *p < 0x7f);
}

static void check_error(const char *xml, size_t size)
{
        char code[64], message[256], small_code[5], small_message[7];

        memset(code, SENTINEL, sizeof(code));
        memset(message, SENTINEL, sizeof(message));
        int r = cairn_s3_parse_error(xml, size, code, sizeof(code), message, sizeof(message));
        CHECK(r == 0 || r == -EINVAL);
        if (r < 0) {
                CHECK(untouched(code, sizeof(code)) && untouched(message, sizeof(message)));
                return;
        }
        check_text(code, sizeof(code));
        check_text(message, sizeof(message));
        CHECK(code[0] != '\0' && code[0] != ' ');
        size_t n = strlen(message);
        CHECK(n == 0 || (message[0] != ' ' && message[n - 1] != ' ') || n == sizeof(message) - 1);
        CHECK(strstr(message, "  ") == NULL);

        /* Truncated outputs are prefixes of the full ones. */
        memset(small_code, SENTINEL, sizeof(small_code));
        memset(small_message, SENTINEL, sizeof(small_message));
        r = cairn_s3_parse_error(xml, size, small_code, sizeof(small_code), small_message,
                                 sizeof(small_message));
        CHECK(r == 0);
        check_text(small_code, sizeof(small_code));
        check_text(small_message, sizeof(small_message));
        CHECK(strncmp(code, small_code, strlen(small_code)) == 0);
        CHECK(strncmp(message, small_message, strlen(small_message)) == 0);
        /* No message buffer at all is fine. */
        CHECK(cairn_s3_parse_error(xml, size, small_code, sizeof(small_code), NULL, 0) == 0);
}

static void check_upload_id(const char *xml, size_t size)
{
        char id[1100], small[9];

        memset(id, SENTINEL, sizeof(id));
        int r = cairn_s3_parse_upload_id(xml, size, id, sizeof(id));
        CHECK(r == 0 || r == -EINVAL || r == -EOVERFLOW);
        if (r < 0) {
                CHECK(untouched(id, sizeof(id)));
                return;
        }
        check_text(id, sizeof(id));
        CHECK(id[0] != '\0');
        CHECK(strchr(id, ' ') == NULL);
        /* Ids are never truncated: too small a buffer is an error. */
        memset(small, SENTINEL, sizeof(small));
        r = cairn_s3_parse_upload_id(xml, size, small, sizeof(small));
        if (strlen(id) < sizeof(small)) {
                CHECK(r == 0 && strcmp(id, small) == 0);
        } else {
                CHECK(r == -EOVERFLOW && untouched(small, sizeof(small)));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *xml = malloc(size ? size : 1);
        if (!xml)
                return 0;
        memcpy(xml, data, size);
        check_error(xml, size);
        check_upload_id(xml, size);
        free(xml);
        return 0;
}
