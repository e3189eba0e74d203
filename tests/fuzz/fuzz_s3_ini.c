/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the INI parser of the AWS shared config and
 * credentials files.  Those files are local, but they are user-edited and
 * full of secrets, so the parser must be exact about bounds.
 *
 * Input layout: byte 0 selects the dialect (bit 0: config file), then the
 * profile name up to the first '\n' (at most 64 bytes), then the file.
 * Checked: only documented results; keys and values handed out are
 * non-empty, NUL-terminated, single-line and trimmed; keys are lowercase;
 * nothing is reported when the profile is not found.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/s3.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_s3_ini: check failed: %s (line %d)\n", #cond,        \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static bool blank(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static void found(const char *key, const char *value, void *ctx)
{
        unsigned *calls = ctx;
        size_t kl = strlen(key), vl = strlen(value);

        (*calls)++;
        CHECK(kl > 0 && vl > 0);
        CHECK(!strchr(key, '\n') && !strchr(value, '\n'));
        CHECK(!blank(key[0]) && !blank(key[kl - 1]));
        CHECK(!blank(value[0]) && !blank(value[vl - 1]));
        for (const char *k = key; *k; k++)
                CHECK(!(*k >= 'A' && *k <= 'Z'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char profile[65];
        unsigned calls = 0;

        if (size < 1)
                return 0;
        bool config_file = data[0] & 1;
        const uint8_t *p = data + 1, *end = data + size;
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || nl - p > 64)
                return 0;
        memcpy(profile, p, (size_t)(nl - p));
        profile[nl - p] = '\0';
        size_t len = (size_t)(end - nl - 1);
        char *text = malloc(len ? len : 1);
        if (!text)
                return 0;
        memcpy(text, nl + 1, len);
        int r = cairn_s3_ini_parse(text, len, profile, config_file, found, &calls);
        CHECK(r == 0 || r == 1 || r == -EINVAL || r == -EFBIG || r == -ENOMEM);
        if (r == 0)
                CHECK(calls == 0);
        free(text);
        return 0;
}
