/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC-32C.  The library's fast paths (SSE4.2 with three interleaved
 * streams over 24 KiB blocks, or slicing-by-8) are checked against the
 * published check values and against a deliberately naive bit-at-a-time
 * implementation written here, over many lengths and alignments -- with
 * extra weight on lengths just around multiples of the 3 x 8 KiB block,
 * where the stream merging happens -- and for any split of the input into
 * incremental calls.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/crc32c.h"

/* Reflected Castagnoli polynomial. */
#define POLY    0x82f63b78u
#define MAX_LEN 200000u
#define BLOCK3  (3u * 8192u)

static uint32_t crc_reference(uint32_t crc, const uint8_t *p, size_t len)
{
        crc = ~crc;
        for (size_t i = 0; i < len; i++) {
                crc ^= p[i];
                for (int k = 0; k < 8; k++)
                        crc = (crc >> 1) ^ (POLY & (0u - (crc & 1u)));
        }
        return ~crc;
}

static uint64_t rng_state = 0x0123456789abcdefull;

static uint64_t rng_next(void)
{
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static void fill_random(uint8_t *buf, size_t len)
{
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rng_next();
}

static void test_check_value(void **state)
{
        (void)state;
        assert_int_equal(cairn_crc32c(0, "123456789", 9), 0xe3069283u);
        assert_int_equal(crc_reference(0, (const uint8_t *)"123456789", 9), 0xe3069283u);
}

/* RFC 3720 (iSCSI) appendix B.4 vectors. */
static void test_rfc3720_vectors(void **state)
{
        (void)state;
        uint8_t buf[32];
        memset(buf, 0, sizeof(buf));
        assert_int_equal(cairn_crc32c(0, buf, 32), 0x8a9136aau);
        memset(buf, 0xff, sizeof(buf));
        assert_int_equal(cairn_crc32c(0, buf, 32), 0x62a8ab43u);
        for (int i = 0; i < 32; i++)
                buf[i] = (uint8_t)i;
        assert_int_equal(cairn_crc32c(0, buf, 32), 0x46dd794eu);
        for (int i = 0; i < 32; i++)
                buf[i] = (uint8_t)(31 - i);
        assert_int_equal(cairn_crc32c(0, buf, 32), 0x113fdb5cu);
}

static void test_empty(void **state)
{
        (void)state;
        uint8_t dummy = 0x55;
        assert_int_equal(cairn_crc32c(0, &dummy, 0), 0);
        assert_int_equal(cairn_crc32c(0, NULL, 0), 0);
        /* An empty update leaves any running value unchanged. */
        assert_int_equal(cairn_crc32c(0xe3069283u, &dummy, 0), 0xe3069283u);
        assert_int_equal(cairn_crc32c(0xdeadbeefu, NULL, 0), 0xdeadbeefu);
}

static void check_len(const uint8_t *buf, size_t len)
{
        uint32_t want = crc_reference(0, buf, len);
        uint32_t got = cairn_crc32c(0, buf, len);
        if (got != want)
                fail_msg("crc32c mismatch at length %zu: got %08x want %08x", len, got, want);
}

/* Reference CRCs of every prefix of buf, in one bitwise pass. */
static uint32_t *reference_prefixes(const uint8_t *buf, size_t len)
{
        uint32_t *pre = malloc((len + 1) * sizeof(*pre));
        assert_non_null(pre);
        uint32_t crc = 0;
        pre[0] = 0;
        for (size_t i = 0; i < len; i++) {
                crc = crc_reference(crc, buf + i, 1);
                pre[i + 1] = crc;
        }
        return pre;
}

static void check_prefix(const uint8_t *buf, const uint32_t *pre, size_t len)
{
        uint32_t got = cairn_crc32c(0, buf, len);
        if (got != pre[len])
                fail_msg("crc32c mismatch at length %zu: got %08x want %08x", len, got, pre[len]);
}

static void test_reference_small_lengths(void **state)
{
        (void)state;
        uint8_t *buf = malloc(4096 + 16);
        assert_non_null(buf);
        fill_random(buf, 4096 + 16);
        /* Every length up to 4 KiB, at every alignment mod 8. */
        for (size_t align = 0; align < 8; align++) {
                uint32_t *pre = reference_prefixes(buf + align, 4096);
                for (size_t len = 0; len <= 4096; len++)
                        check_prefix(buf + align, pre, len);
                free(pre);
        }
        free(buf);
}

static void test_reference_around_blocks(void **state)
{
        (void)state;
        uint8_t *buf = malloc(MAX_LEN + 8);
        assert_non_null(buf);
        fill_random(buf, MAX_LEN + 8);
        for (size_t align = 0; align < 8; align += 3) {
                uint32_t *pre = reference_prefixes(buf + align, MAX_LEN);
                /* Lengths within +-24 bytes of every multiple of 8 KiB (so of 24 KiB too). */
                for (size_t m = 8192; m <= MAX_LEN; m += 8192)
                        for (size_t len = m - 24; len <= m + 24 && len <= MAX_LEN; len++)
                                check_prefix(buf + align, pre, len);
                /* Just over multiples of the three-stream block, specifically. */
                for (size_t k = 1; k * BLOCK3 <= MAX_LEN; k++)
                        for (size_t extra = 1; extra <= 64 && k * BLOCK3 + extra <= MAX_LEN;
                             extra++)
                                check_prefix(buf + align, pre, k * BLOCK3 + extra);
                /* And a spread of lengths over the whole range. */
                for (size_t len = 0; len <= MAX_LEN; len += 997)
                        check_prefix(buf + align, pre, len);
                check_prefix(buf + align, pre, MAX_LEN);
                free(pre);
        }
        free(buf);
}

static void test_reference_random_lengths(void **state)
{
        (void)state;
        uint8_t *buf = malloc(MAX_LEN + 8);
        assert_non_null(buf);
        for (int round = 0; round < 20; round++) {
                size_t align = (size_t)(rng_next() % 8);
                fill_random(buf + align, MAX_LEN);
                uint32_t *pre = reference_prefixes(buf + align, MAX_LEN);
                for (int k = 0; k < 100; k++)
                        check_prefix(buf + align, pre, (size_t)(rng_next() % (MAX_LEN + 1)));
                free(pre);
        }
        free(buf);
}

/* Patterned data whose bytes stress the stream merge: long zero runs, all-ones. */
static void test_reference_patterns(void **state)
{
        (void)state;
        uint8_t *buf = malloc(MAX_LEN);
        assert_non_null(buf);
        memset(buf, 0, MAX_LEN);
        check_len(buf, MAX_LEN);
        check_len(buf, BLOCK3 + 1);
        memset(buf, 0xff, MAX_LEN);
        check_len(buf, MAX_LEN);
        check_len(buf, 2 * BLOCK3 + 5);
        memset(buf, 0, MAX_LEN);
        /* A single set bit anywhere inside the first three blocks must change the CRC. */
        uint32_t zero = cairn_crc32c(0, buf, 3 * BLOCK3);
        for (size_t pos = 0; pos < 3 * BLOCK3; pos += 997) {
                buf[pos] = 0x80;
                uint32_t got = cairn_crc32c(0, buf, 3 * BLOCK3);
                assert_int_not_equal(got, zero);
                assert_int_equal(got, crc_reference(0, buf, 3 * BLOCK3));
                buf[pos] = 0;
        }
        free(buf);
}

static void test_incremental_random_splits(void **state)
{
        (void)state;
        uint8_t *buf = malloc(MAX_LEN);
        assert_non_null(buf);
        fill_random(buf, MAX_LEN);
        for (int round = 0; round < 200; round++) {
                size_t len = (size_t)(rng_next() % (MAX_LEN + 1));
                uint32_t whole = cairn_crc32c(0, buf, len);
                /* Pieces from 0 bytes to a few blocks, so that splits land anywhere. */
                uint64_t max_piece = round % 3 == 0 ? 17 : round % 3 == 1 ? 4096 : 3 * BLOCK3 + 7;
                uint32_t crc = 0;
                size_t off = 0;
                while (off < len) {
                        size_t n = (size_t)(rng_next() % (max_piece + 1));
                        if (n > len - off)
                                n = len - off;
                        crc = cairn_crc32c(crc, buf + off, n);
                        off += n;
                }
                assert_int_equal(crc, whole);
        }
        /* Two-way split at every position near a block boundary. */
        size_t len = 2 * BLOCK3 + 100;
        uint32_t whole = cairn_crc32c(0, buf, len);
        for (size_t cut = BLOCK3 - 20; cut <= BLOCK3 + 20; cut++)
                assert_int_equal(cairn_crc32c(cairn_crc32c(0, buf, cut), buf + cut, len - cut),
                                 whole);
        free(buf);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_check_value),
            cmocka_unit_test(test_rfc3720_vectors),
            cmocka_unit_test(test_empty),
            cmocka_unit_test(test_reference_small_lengths),
            cmocka_unit_test(test_reference_around_blocks),
            cmocka_unit_test(test_reference_random_lengths),
            cmocka_unit_test(test_reference_patterns),
            cmocka_unit_test(test_incremental_random_splits),
        };
        return cmocka_run_group_tests_name("crc32c", tests, NULL, NULL);
}
