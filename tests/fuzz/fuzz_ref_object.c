/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for cairn_ref_object_parse(): the bytes of a ref object
 * as any store (a web server, an S3 bucket) returns them.
 *
 * The target checks the parser against an independent statement of the
 * grammar ("sha256:" + 64 lowercase hex, optionally "\n") and, on
 * success, that formatting the digest gives the input back: one ref, one
 * spelling.  The input is copied into a buffer of exactly its size, so
 * that a read past len is an ASan error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_ref_object: check failed: %s (line %d)\n", #cond,    \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static bool grammar_accepts(const uint8_t *p, size_t n)
{
        if (n == 72 && p[71] == '\n')
                n = 71;
        if (n != 71 || memcmp(p, "sha256:", 7) != 0)
                return false;
        for (size_t i = 7; i < n; i++)
                if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct cairn_digest d, sentinel;
        char text[CAIRN_DIGEST_STR_SIZE];
        char *buf = malloc(size ? size : 1);

        if (!buf)
                return 0;
        memcpy(buf, data, size);
        memset(&d, 0xa5, sizeof(d));
        sentinel = d;
        int r = cairn_ref_object_parse(buf, size, &d);
        CHECK(r == 0 || r == -EINVAL);
        CHECK((r == 0) == grammar_accepts(data, size));
        if (r == 0) {
                cairn_digest_to_string(&d, text);
                CHECK(memcmp(text, data, CAIRN_DIGEST_STR_SIZE - 1) == 0);
        } else {
                CHECK(memcmp(&d, &sentinel, sizeof(d)) == 0);
        }
        free(buf);
        return 0;
}
