/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 and digest text forms.  The hash is checked against the FIPS
 * 180-2 known answers, one-shot and fed incrementally in odd-sized pieces
 * (so that updates straddle the 64-byte block boundary in every way), and
 * against the SHA-256 values that the external AWS SigV4 suite records for
 * its canonical requests.  The text forms must round-trip and reject every
 * malformed spelling, leaving the output untouched.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/digest.h"

struct vector {
        const char *msg; /* NULL: one million 'a' */
        const char *hex;
};

static const struct vector fips_vectors[] = {
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
     "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    {NULL, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
};

#define MILLION 1000000u

static uint8_t *vector_message(const struct vector *v, size_t *ret_len)
{
        size_t len = v->msg ? strlen(v->msg) : MILLION;
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        if (v->msg)
                memcpy(buf, v->msg, len);
        else
                memset(buf, 'a', len);
        *ret_len = len;
        return buf;
}

static void assert_digest_hex(const struct cairn_digest *d, const char *hex)
{
        char buf[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(d, buf);
        assert_string_equal(buf, hex);
}

static void test_fips_one_shot(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(fips_vectors) / sizeof(fips_vectors[0]); i++) {
                size_t len;
                uint8_t *msg = vector_message(&fips_vectors[i], &len);
                struct cairn_digest d;
                cairn_sha256(msg, len, &d);
                assert_digest_hex(&d, fips_vectors[i].hex);
                free(msg);
        }
}

/* Feeds the message in pieces whose sizes cycle through awkward values. */
static void test_fips_incremental(void **state)
{
        static const size_t pieces[] = {1, 3, 7, 63, 64, 65, 127, 1000, 4099, 0, 55, 56, 57};
        (void)state;
        for (size_t i = 0; i < sizeof(fips_vectors) / sizeof(fips_vectors[0]); i++) {
                size_t len;
                uint8_t *msg = vector_message(&fips_vectors[i], &len);
                for (size_t start = 0; start < sizeof(pieces) / sizeof(pieces[0]); start++) {
                        struct cairn_sha256_ctx *ctx = NULL;
                        struct cairn_digest d;
                        assert_int_equal(cairn_sha256_ctx_new(&ctx), 0);
                        assert_non_null(ctx);
                        size_t off = 0, k = start;
                        while (off < len) {
                                size_t n = pieces[k++ % (sizeof(pieces) / sizeof(pieces[0]))];
                                if (n > len - off)
                                        n = len - off;
                                cairn_sha256_ctx_update(ctx, msg + off, n);
                                off += n;
                        }
                        cairn_sha256_ctx_final(ctx, &d);
                        assert_digest_hex(&d, fips_vectors[i].hex);
                        cairn_sha256_ctx_free(ctx);
                }
                free(msg);
        }
}

/* Byte-at-a-time over the million-'a' message: the worst case for buffering. */
static void test_million_bytewise(void **state)
{
        struct cairn_sha256_ctx *ctx = NULL;
        struct cairn_digest d;
        const uint8_t a = 'a';
        (void)state;
        assert_int_equal(cairn_sha256_ctx_new(&ctx), 0);
        for (unsigned i = 0; i < MILLION; i++)
                cairn_sha256_ctx_update(ctx, &a, 1);
        cairn_sha256_ctx_final(ctx, &d);
        assert_digest_hex(&d, fips_vectors[4].hex);
        cairn_sha256_ctx_free(ctx);
        cairn_sha256_ctx_free(NULL); /* destructors accept NULL */
}

/* Independent contexts do not share state. */
static void test_interleaved_contexts(void **state)
{
        struct cairn_sha256_ctx *x = NULL, *y = NULL;
        struct cairn_digest dx, dy;
        (void)state;
        assert_int_equal(cairn_sha256_ctx_new(&x), 0);
        assert_int_equal(cairn_sha256_ctx_new(&y), 0);
        cairn_sha256_ctx_update(x, "a", 1);
        cairn_sha256_ctx_update(y, "abcdbcdecdefdefgefghfghighijhijk", 32);
        cairn_sha256_ctx_update(x, "bc", 2);
        cairn_sha256_ctx_update(y, "ijkljklmklmnlmnomnopnopq", 24);
        cairn_sha256_ctx_final(x, &dx);
        cairn_sha256_ctx_final(y, &dy);
        assert_digest_hex(&dx, fips_vectors[1].hex);
        assert_digest_hex(&dy, fips_vectors[2].hex);
        cairn_sha256_ctx_free(x);
        cairn_sha256_ctx_free(y);
}

static char *read_file(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap + 1);
        assert_non_null(buf);
        for (;;) {
                size_t n = fread(buf + len, 1, cap - len, f);
                len += n;
                if (len < cap)
                        break;
                cap *= 2;
                buf = realloc(buf, cap + 1);
                assert_non_null(buf);
        }
        fclose(f);
        buf[len] = '\0';
        *ret_len = len;
        return buf;
}

/*
 * External vectors: each SigV4 case's string-to-sign ends with the hex
 * SHA-256 of its canonical request.  Skipped when the shared test data is
 * not there (a source tarball without ../shared).
 */
static void test_sigv4_vectors(void **state)
{
        (void)state;
        const char *root = getenv("CAIRN_SHARED_TESTDATA");
        char dir[4096];
        if (!root || snprintf(dir, sizeof(dir), "%s/sigv4", root) >= (int)sizeof(dir))
                skip();
        DIR *d = opendir(dir);
        if (!d)
                skip();
        unsigned checked = 0;
        for (struct dirent *de; (de = readdir(d));) {
                char req_path[8192], sts_path[8192];
                if (de->d_name[0] == '.')
                        continue;
                snprintf(req_path, sizeof(req_path), "%s/%s/header-canonical-request.txt", dir,
                         de->d_name);
                snprintf(sts_path, sizeof(sts_path), "%s/%s/header-string-to-sign.txt", dir,
                         de->d_name);
                size_t req_len, sts_len;
                char *req = read_file(req_path, &req_len);
                char *sts = read_file(sts_path, &sts_len);
                if (req && sts) {
                        while (sts_len && (sts[sts_len - 1] == '\n' || sts[sts_len - 1] == '\r'))
                                sts[--sts_len] = '\0';
                        const char *nl = strrchr(sts, '\n');
                        const char *want = nl ? nl + 1 : sts;
                        struct cairn_digest got;
                        assert_int_equal(strlen(want), CAIRN_DIGEST_HEX_LEN);
                        cairn_sha256(req, req_len, &got);
                        assert_digest_hex(&got, want);
                        checked++;
                }
                free(req);
                free(sts);
        }
        closedir(d);
        if (checked == 0)
                skip();
        assert_true(checked >= 10);
}

static void test_hex_round_trip(void **state)
{
        (void)state;
        struct cairn_digest d, back;
        char hex[CAIRN_DIGEST_HEX_LEN + 1], str[CAIRN_DIGEST_STR_SIZE];
        for (int round = 0; round < 64; round++) {
                for (int i = 0; i < CAIRN_DIGEST_SIZE; i++)
                        d.bytes[i] = (uint8_t)(round * 37 + i * 101 + (i >> 2) * round);
                if (round == 0)
                        memset(d.bytes, 0, sizeof(d.bytes));
                if (round == 1)
                        memset(d.bytes, 0xff, sizeof(d.bytes));
                cairn_digest_to_hex(&d, hex);
                assert_int_equal(strlen(hex), CAIRN_DIGEST_HEX_LEN);
                for (int i = 0; i < CAIRN_DIGEST_HEX_LEN; i++)
                        assert_true((hex[i] >= '0' && hex[i] <= '9') ||
                                    (hex[i] >= 'a' && hex[i] <= 'f'));
                memset(&back, 0x5a, sizeof(back));
                assert_int_equal(cairn_digest_from_hex(hex, strlen(hex), &back), 0);
                assert_true(cairn_digest_equal(&d, &back));

                cairn_digest_to_string(&d, str);
                assert_int_equal(strlen(str), CAIRN_DIGEST_STR_SIZE - 1);
                assert_memory_equal(str, "sha256:", 7);
                assert_string_equal(str + 7, hex);
                memset(&back, 0x5a, sizeof(back));
                assert_int_equal(cairn_digest_from_string(str, &back), 0);
                assert_true(cairn_digest_equal(&d, &back));
        }
}

static void test_hex_uppercase_accepted(void **state)
{
        (void)state;
        const char *lower = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        const char *upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        const char *mixed = "Ba7816bF8f01CfEa414140De5dAe2223B00361a396177a9cB410Ff61F20015aD";
        struct cairn_digest a, b, c, abc;
        cairn_sha256("abc", 3, &abc);
        assert_int_equal(cairn_digest_from_hex(lower, 64, &a), 0);
        assert_int_equal(cairn_digest_from_hex(upper, 64, &b), 0);
        assert_int_equal(cairn_digest_from_hex(mixed, 64, &c), 0);
        assert_true(cairn_digest_equal(&a, &abc));
        assert_true(cairn_digest_equal(&b, &abc));
        assert_true(cairn_digest_equal(&c, &abc));
        /* Output is always lowercase. */
        char hex[65];
        cairn_digest_to_hex(&b, hex);
        assert_string_equal(hex, lower);
}

/* A rejected parse must leave the output exactly as it was. */
static void expect_bad_hex(const char *hex, size_t len)
{
        struct cairn_digest d, before;
        memset(&d, 0xa5, sizeof(d));
        before = d;
        assert_int_equal(cairn_digest_from_hex(hex, len, &d), -EINVAL);
        assert_memory_equal(&d, &before, sizeof(d));
}

static void expect_bad_string(const char *s)
{
        struct cairn_digest d, before;
        memset(&d, 0x3c, sizeof(d));
        before = d;
        assert_int_equal(cairn_digest_from_string(s, &d), -EINVAL);
        assert_memory_equal(&d, &before, sizeof(d));
}

static void test_hex_rejects(void **state)
{
        (void)state;
        const char *good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        char buf[200];

        /* Wrong lengths, including the right digits with the length off by one. */
        expect_bad_hex(good, 63);
        expect_bad_hex(good, 0);
        expect_bad_hex("", 0);
        snprintf(buf, sizeof(buf), "%s0", good);
        expect_bad_hex(buf, 65);
        snprintf(buf, sizeof(buf), "%s%s", good, good);
        expect_bad_hex(buf, 128);

        /* A non-hex character in every position, one at a time. */
        static const char bad_chars[] = {'g', 'G', 'x', ' ', ':', '/', '-', '\n', '\0', '@', '`'};
        for (size_t c = 0; c < sizeof(bad_chars); c++) {
                for (size_t pos = 0; pos < 64; pos += (c == 0 ? 1 : 13)) {
                        memcpy(buf, good, 65);
                        buf[pos] = bad_chars[c];
                        expect_bad_hex(buf, 64);
                }
        }
        /* High-bit bytes (e.g. UTF-8) are not digits either. */
        memcpy(buf, good, 65);
        buf[10] = (char)0xc3;
        expect_bad_hex(buf, 64);
}

static void test_string_rejects(void **state)
{
        (void)state;
        const char *hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        char buf[300];

        expect_bad_string("");
        expect_bad_string("sha256:");
        expect_bad_string(hex); /* missing prefix */
        snprintf(buf, sizeof(buf), "SHA256:%s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha512:%s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256%s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), " sha256:%s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256: %s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256:%s\n", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256:%s ", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256:%.63s", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256:%s0", hex);
        expect_bad_string(buf);
        snprintf(buf, sizeof(buf), "sha256:%.63sz", hex);
        expect_bad_string(buf);

        struct cairn_digest d, empty;
        snprintf(buf, sizeof(buf), "sha256:%s", hex);
        assert_int_equal(cairn_digest_from_string(buf, &d), 0);
        cairn_sha256("", 0, &empty);
        assert_true(cairn_digest_equal(&d, &empty));
}

static void test_digest_equal(void **state)
{
        (void)state;
        struct cairn_digest a, b;
        cairn_sha256("abc", 3, &a);
        b = a;
        assert_true(cairn_digest_equal(&a, &b));
        assert_true(cairn_digest_equal(&a, &a));
        /* A difference in any single bit of any byte, first and last included. */
        for (int i = 0; i < CAIRN_DIGEST_SIZE; i++) {
                for (int bit = 0; bit < 8; bit++) {
                        b = a;
                        b.bytes[i] ^= (uint8_t)(1u << bit);
                        assert_false(cairn_digest_equal(&a, &b));
                        assert_false(cairn_digest_equal(&b, &a));
                }
        }
        cairn_sha256("abd", 3, &b);
        assert_false(cairn_digest_equal(&a, &b));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_fips_one_shot),
            cmocka_unit_test(test_fips_incremental),
            cmocka_unit_test(test_million_bytewise),
            cmocka_unit_test(test_interleaved_contexts),
            cmocka_unit_test(test_sigv4_vectors),
            cmocka_unit_test(test_hex_round_trip),
            cmocka_unit_test(test_hex_uppercase_accepted),
            cmocka_unit_test(test_hex_rejects),
            cmocka_unit_test(test_string_rejects),
            cmocka_unit_test(test_digest_equal),
        };
        return cmocka_run_group_tests_name("digest", tests, NULL, NULL);
}
