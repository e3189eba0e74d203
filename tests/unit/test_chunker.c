/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Content-defined chunking.  Parameter validation; the streaming contract
 * of cairn_chunker_next() (at_eof = 0 returns 0 until a boundary or
 * max_size bytes are available, and a boundary found in a prefix is the
 * one found with more data); min/max respected; determinism, also when the
 * input arrives in windows of any size; shift resistance (an insertion at
 * the front of 64 MiB changes only the first chunks); and chunk sizes
 * centred on avg for random data.  A second, byte-at-a-time
 * implementation of the documented algorithm (gear table from splitmix64
 * seeded with "cairn-cd", normalized masks around avg) pins the exact
 * boundaries, since they are part of the on-store format.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/chunker.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
        uint64_t st = seed;
        size_t i = 0;
        for (; i + 8 <= len; i += 8) {
                uint64_t v = splitmix64(&st);
                memcpy(buf + i, &v, 8);
        }
        for (; i < len; i++)
                buf[i] = (uint8_t)splitmix64(&st);
}

static const struct cairn_chunker_params small_params = {16 * KiB, 64 * KiB, 256 * KiB};
static const struct cairn_chunker_params tiny_params = {1 * KiB, 4 * KiB, 16 * KiB};

/* ---- parameters ---- */

static int validate(uint32_t min, uint32_t avg, uint32_t max)
{
        struct cairn_chunker_params p = {min, avg, max};
        return cairn_chunker_params_validate(&p);
}

static void test_params_default(void **state)
{
        (void)state;
        struct cairn_chunker_params p;
        memset(&p, 0xff, sizeof(p));
        cairn_chunker_params_default(&p);
        assert_int_equal(p.min_size, CAIRN_CHUNK_MIN_DEFAULT);
        assert_int_equal(p.avg_size, CAIRN_CHUNK_AVG_DEFAULT);
        assert_int_equal(p.max_size, CAIRN_CHUNK_MAX_DEFAULT);
        assert_int_equal(cairn_chunker_params_validate(&p), 0);
}

static void test_params_validate(void **state)
{
        (void)state;
        /* Accepted: the edges of the limits. */
        assert_int_equal(validate(64, 128, 256), 0);
        assert_int_equal(validate(CAIRN_CHUNK_MIN_LIMIT, 1u << 20, CAIRN_CHUNK_MAX_LIMIT), 0);
        assert_int_equal(validate(16 * KiB, 64 * KiB, 256 * KiB), 0);
        assert_int_equal(validate(127, 128, 129), 0);
        assert_int_equal(validate(1, 2, 3), -EINVAL);

        /* min >= avg, avg >= max. */
        assert_int_equal(validate(64 * KiB, 64 * KiB, 256 * KiB), -EINVAL);
        assert_int_equal(validate(128 * KiB, 64 * KiB, 256 * KiB), -EINVAL);
        assert_int_equal(validate(16 * KiB, 64 * KiB, 64 * KiB), -EINVAL);
        assert_int_equal(validate(16 * KiB, 64 * KiB, 32 * KiB), -EINVAL);
        assert_int_equal(validate(16 * KiB, 16 * KiB, 16 * KiB), -EINVAL);
        assert_int_equal(validate(0, 0, 0), -EINVAL);

        /* avg not a power of two. */
        assert_int_equal(validate(16 * KiB, 48 * KiB, 256 * KiB), -EINVAL);
        assert_int_equal(validate(16 * KiB, 64 * KiB + 1, 256 * KiB), -EINVAL);
        assert_int_equal(validate(16 * KiB, 64 * KiB - 1, 256 * KiB), -EINVAL);
        assert_int_equal(validate(100, 3 * 64, 1000), -EINVAL);

        /* Out of the hard limits. */
        assert_int_equal(validate(CAIRN_CHUNK_MIN_LIMIT - 1, 128, 256), -EINVAL);
        assert_int_equal(validate(0, 128, 256), -EINVAL);
        assert_int_equal(validate(1 * MiB, 2 * MiB, CAIRN_CHUNK_MAX_LIMIT + 1), -EINVAL);
        assert_int_equal(validate(1 * MiB, 32 * MiB, UINT32_MAX), -EINVAL);
        assert_int_equal(validate(1u << 31, 1u << 31, UINT32_MAX), -EINVAL);
        /* avg a power of two above max limit. */
        assert_int_equal(validate(1 * MiB, 128 * MiB, 256 * MiB), -EINVAL);
}

/* ---- the streaming contract ---- */

static void test_len_zero_and_tiny(void **state)
{
        (void)state;
        const struct cairn_chunker_params *p = &tiny_params;
        uint8_t buf[64] = {0};
        assert_int_equal(cairn_chunker_next(p, buf, 0, 0), 0);
        assert_int_equal(cairn_chunker_next(p, buf, 0, 1), 0);
        /* Below min: nothing can be cut until EOF; at EOF the rest is one chunk. */
        assert_int_equal(cairn_chunker_next(p, buf, 1, 0), 0);
        assert_int_equal(cairn_chunker_next(p, buf, 1, 1), 1);
        assert_int_equal(cairn_chunker_next(p, buf, 63, 1), 63);
}

/*
 * For each input, c = the cut with plenty of data.  Then, for every prefix
 * length L: with at_eof = 0 the result is c if c <= L and c is a real
 * boundary found inside L bytes, else 0; with at_eof = 1 it is min(c, L).
 */
static void check_prefix_contract(const struct cairn_chunker_params *p, const uint8_t *data,
                                  size_t avail, size_t step)
{
        size_t c = cairn_chunker_next(p, data, avail, 0);
        assert_true(c >= 1);
        assert_true(c <= p->max_size);
        assert_true(c > p->min_size || avail <= p->min_size);
        for (size_t L = 1; L <= (size_t)p->max_size + 10 && L <= avail; L += step) {
                size_t want0 = c <= L ? c : 0;
                size_t want1 = c <= L ? c : L;
                /* Exactly max_size bytes always yield a cut, boundary or not. */
                if (L >= p->max_size)
                        want0 = c;
                size_t got0 = cairn_chunker_next(p, data, L, 0);
                size_t got1 = cairn_chunker_next(p, data, L, 1);
                if (got0 != want0 || got1 != want1)
                        fail_msg("L=%zu c=%zu: at_eof=0 got %zu want %zu, at_eof=1 got %zu want "
                                 "%zu",
                                 L, c, got0, want0, got1, want1);
        }
}

static void test_prefix_contract(void **state)
{
        (void)state;
        const struct cairn_chunker_params *p = &tiny_params;
        size_t len = 2 * MiB;
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_random(buf, len, 7);
        /* Walk the whole buffer chunk by chunk, checking the contract at each start. */
        size_t off = 0;
        unsigned checked = 0;
        while (len - off > 2 * p->max_size) {
                check_prefix_contract(p, buf + off, len - off, checked < 2 ? 1 : 251);
                off += cairn_chunker_next(p, buf + off, len - off, 0);
                checked++;
        }
        assert_true(checked > 100);
        free(buf);
}

/* Constant input has no boundaries, so it exercises the "no boundary found" paths. */
static void test_no_boundary_data(void **state)
{
        (void)state;
        const struct cairn_chunker_params *p = &tiny_params;
        size_t len = 4 * p->max_size;
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        for (int fillbyte = 0; fillbyte < 256; fillbyte += 51) {
                memset(buf, fillbyte, len);
                size_t c = cairn_chunker_next(p, buf, len, 0);
                assert_true(c > p->min_size && c <= p->max_size);
                if (c < p->max_size) {
                        /* This byte value happens to make boundaries: contract still holds. */
                        check_prefix_contract(p, buf, len, 97);
                        continue;
                }
                /* No boundary anywhere before max: nothing short of max is cut without EOF. */
                for (size_t L = 1; L < p->max_size; L += 113) {
                        assert_int_equal(cairn_chunker_next(p, buf, L, 0), 0);
                        assert_int_equal(cairn_chunker_next(p, buf, L, 1), L);
                }
                assert_int_equal(cairn_chunker_next(p, buf, p->max_size - 1, 0), 0);
                assert_int_equal(cairn_chunker_next(p, buf, p->max_size, 0), p->max_size);
                assert_int_equal(cairn_chunker_next(p, buf, p->max_size, 1), p->max_size);
                assert_int_equal(cairn_chunker_next(p, buf, p->max_size + 1, 0), p->max_size);
        }
        free(buf);
}

/* ---- chunking whole buffers ---- */

struct cuts {
        size_t *len;
        size_t n, cap;
};

static void cuts_push(struct cuts *c, size_t len)
{
        if (c->n == c->cap) {
                c->cap = c->cap ? 2 * c->cap : 256;
                c->len = realloc(c->len, c->cap * sizeof(*c->len));
                assert_non_null(c->len);
        }
        c->len[c->n++] = len;
}

/* Chunks a whole in-memory buffer: at_eof = 1 only once fewer than max bytes remain. */
static struct cuts chunk_all(const struct cairn_chunker_params *p, const uint8_t *data, size_t len)
{
        struct cuts c = {0};
        size_t off = 0;
        while (off < len) {
                size_t n = cairn_chunker_next(p, data + off, len - off, 1);
                assert_true(n >= 1 && n <= len - off);
                cuts_push(&c, n);
                off += n;
        }
        return c;
}

/*
 * Chunks the same buffer as a stream arriving in windows of varying size,
 * the way a builder reading a file does: at_eof = 0 until the input ends,
 * refilling whenever the chunker asks for more.
 */
static struct cuts chunk_streaming(const struct cairn_chunker_params *p, const uint8_t *data,
                                   size_t len, uint64_t seed)
{
        struct cuts c = {0};
        size_t start = 0, end = 0;
        uint64_t st = seed;
        for (;;) {
                bool eof = end == len;
                size_t n = start < end ? cairn_chunker_next(p, data + start, end - start, eof) : 0;
                if (n == 0) {
                        if (eof)
                                break;
                        /* Need more input: the next read is a random size, sometimes tiny. */
                        size_t want = (size_t)(splitmix64(&st) % (2 * p->max_size)) + 1;
                        if (want > len - end)
                                want = len - end;
                        end += want;
                        continue;
                }
                assert_true(n <= end - start);
                cuts_push(&c, n);
                start += n;
        }
        assert_int_equal(start, len);
        return c;
}

static void assert_cuts_equal(const struct cuts *a, const struct cuts *b)
{
        assert_int_equal(a->n, b->n);
        for (size_t i = 0; i < a->n; i++)
                if (a->len[i] != b->len[i])
                        fail_msg("chunk %zu differs: %zu vs %zu", i, a->len[i], b->len[i]);
}

static void assert_cuts_bounded(const struct cairn_chunker_params *p, const struct cuts *c,
                                size_t total)
{
        size_t sum = 0;
        for (size_t i = 0; i < c->n; i++) {
                sum += c->len[i];
                assert_true(c->len[i] <= p->max_size);
                if (i + 1 < c->n && c->len[i] < p->min_size)
                        fail_msg("chunk %zu of %zu is %zu bytes, below min %u", i, c->n, c->len[i],
                                 p->min_size);
                assert_true(c->len[i] >= 1);
        }
        assert_int_equal(sum, total);
}

static void test_bounds_and_determinism(void **state)
{
        (void)state;
        const struct cairn_chunker_params params[] = {
            tiny_params, small_params, {64, 128, 256}, {4 * KiB, 8 * KiB, 12 * KiB}};
        size_t len = 16 * MiB + 12345;
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_random(buf, len, 42);
        for (size_t k = 0; k < sizeof(params) / sizeof(params[0]); k++) {
                const struct cairn_chunker_params *p = &params[k];
                size_t this_len = p->max_size < 1024 ? 1 * MiB + 77 : len;
                struct cuts a = chunk_all(p, buf, this_len);
                struct cuts b = chunk_all(p, buf, this_len);
                assert_cuts_bounded(p, &a, this_len);
                assert_cuts_equal(&a, &b);
                struct cuts s = chunk_streaming(p, buf, this_len, 1000 + k);
                assert_cuts_equal(&a, &s);
                /* Max-size cuts do happen with a tight max: the bound is enforced, not lucky. */
                if (p->max_size <= p->avg_size * 3 / 2) {
                        size_t at_max = 0;
                        for (size_t i = 0; i < a.n; i++)
                                at_max += a.len[i] == p->max_size;
                        assert_true(at_max > 0);
                }
                free(a.len);
                free(b.len);
                free(s.len);
        }
        free(buf);
}

/* Small inputs: every length near min and max ends in a final chunk <= max. */
static void test_short_inputs(void **state)
{
        (void)state;
        const struct cairn_chunker_params *p = &tiny_params;
        size_t len = 3 * p->max_size + 2;
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_random(buf, len, 99);
        const size_t sizes[] = {1,
                                2,
                                p->min_size - 1,
                                p->min_size,
                                p->min_size + 1,
                                p->avg_size - 1,
                                p->avg_size,
                                p->avg_size + 1,
                                p->max_size - 1,
                                p->max_size,
                                p->max_size + 1,
                                2 * p->max_size,
                                3 * p->max_size + 2};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                struct cuts c = chunk_all(p, buf, sizes[i]);
                assert_cuts_bounded(p, &c, sizes[i]);
                if (sizes[i] <= p->min_size)
                        assert_int_equal(c.n, 1);
                struct cuts s = chunk_streaming(p, buf, sizes[i], i);
                assert_cuts_equal(&c, &s);
                free(c.len);
                free(s.len);
        }
        free(buf);
}

/* ---- shift resistance ---- */

static uint64_t fnv1a(const uint8_t *p, size_t len)
{
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 0x100000001b3ull;
        return h;
}

struct chunk_key {
        uint64_t hash;
        size_t len;
};

static int key_cmp(const void *a, const void *b)
{
        const struct chunk_key *x = a, *y = b;
        if (x->hash != y->hash)
                return x->hash < y->hash ? -1 : 1;
        return x->len < y->len ? -1 : x->len > y->len;
}

struct sharing {
        size_t shared_bytes;    /* bytes of b's chunks whose content is also a chunk of a */
        size_t unshared_chunks; /* chunks of b that are not */
};

static struct sharing compare_chunkings(const uint8_t *a, const struct cuts *ca, const uint8_t *b,
                                        const struct cuts *cb)
{
        struct sharing res = {0, 0};
        struct chunk_key *keys = malloc(ca->n * sizeof(*keys));
        assert_non_null(keys);
        size_t off = 0;
        for (size_t i = 0; i < ca->n; i++) {
                keys[i] = (struct chunk_key){fnv1a(a + off, ca->len[i]), ca->len[i]};
                off += ca->len[i];
        }
        qsort(keys, ca->n, sizeof(*keys), key_cmp);
        off = 0;
        for (size_t i = 0; i < cb->n; i++) {
                struct chunk_key k = {fnv1a(b + off, cb->len[i]), cb->len[i]};
                if (bsearch(&k, keys, ca->n, sizeof(*keys), key_cmp))
                        res.shared_bytes += cb->len[i];
                else
                        res.unshared_chunks++;
                off += cb->len[i];
        }
        free(keys);
        return res;
}

static void check_shift(const struct cairn_chunker_params *p, size_t len, size_t insert,
                        uint64_t seed)
{
        uint8_t *orig = malloc(len);
        uint8_t *shifted = malloc(len + insert);
        assert_non_null(orig);
        assert_non_null(shifted);
        fill_random(orig, len, seed);
        fill_random(shifted, insert, seed ^ 0x5555);
        memcpy(shifted + insert, orig, len);

        struct cuts a = chunk_all(p, orig, len);
        struct cuts b = chunk_all(p, shifted, len + insert);
        struct sharing sh = compare_chunkings(orig, &a, shifted, &b);
        double frac = (double)sh.shared_bytes / (double)len;
        print_message("shift %zu into %zu MiB with %u/%u/%u: %zu and %zu chunks, %.2f%% shared, "
                      "%zu new chunks\n",
                      insert, len / MiB, p->min_size, p->avg_size, p->max_size, a.n, b.n,
                      100.0 * frac, sh.unshared_chunks);
        assert_true(frac > 0.90);
        /* Only the chunks at the front change: the boundaries resynchronize. */
        assert_true(sh.unshared_chunks <= 3 + insert / p->min_size);
        free(a.len);
        free(b.len);
        free(orig);
        free(shifted);
}

static void test_shift_resistance_small(void **state)
{
        (void)state;
        check_shift(&small_params, 64 * MiB, 1 * KiB, 1);
        check_shift(&small_params, 64 * MiB, 1, 2);
        check_shift(&small_params, 64 * MiB, 1 * MiB + 3, 3);
}

static void test_shift_resistance_default(void **state)
{
        (void)state;
        struct cairn_chunker_params p;
        cairn_chunker_params_default(&p);
        check_shift(&p, 64 * MiB, 1 * KiB, 1);
        check_shift(&p, 64 * MiB, 1 * KiB, 4);
}

/* A change in the middle of the data affects only the chunks around it. */
static void test_local_edit(void **state)
{
        (void)state;
        const struct cairn_chunker_params *p = &small_params;
        size_t len = 32 * MiB;
        uint8_t *a = malloc(len), *b = malloc(len);
        assert_non_null(a);
        assert_non_null(b);
        fill_random(a, len, 11);
        memcpy(b, a, len);
        for (size_t i = 0; i < 100; i++)
                b[len / 2 + i] ^= 0xff;
        struct cuts ca = chunk_all(p, a, len), cb = chunk_all(p, b, len);
        struct sharing sh = compare_chunkings(a, &ca, b, &cb);
        assert_true(len - sh.shared_bytes <= 3 * (size_t)p->max_size);
        assert_true(sh.unshared_chunks <= 3);
        free(ca.len);
        free(cb.len);
        free(a);
        free(b);
}

/* ---- size distribution ---- */

static void check_average(const struct cairn_chunker_params *p, size_t len, uint64_t seed)
{
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_random(buf, len, seed);
        struct cuts c = chunk_all(p, buf, len);
        /* The final chunk is cut by EOF, not by content: leave it out. */
        size_t n = c.n - 1, sum = len - c.len[c.n - 1], at_max = 0;
        for (size_t i = 0; i < n; i++)
                at_max += c.len[i] == p->max_size;
        double avg = (double)sum / (double)n;
        print_message("%u/%u/%u: %zu chunks, mean %.0f (%.2f x avg), %zu at max\n", p->min_size,
                      p->avg_size, p->max_size, n, avg, avg / p->avg_size, at_max);
        assert_true(n >= 100);
        assert_true(avg > 0.75 * p->avg_size);
        assert_true(avg < 1.35 * p->avg_size);
        /* Normalized chunking keeps forced cuts at max rare. */
        assert_true(at_max * 50 < n);
        free(c.len);
        free(buf);
}

static void test_average_size(void **state)
{
        (void)state;
        struct cairn_chunker_params def;
        cairn_chunker_params_default(&def);
        check_average(&tiny_params, 8 * MiB, 5);
        check_average(&small_params, 64 * MiB, 6);
        check_average(&def, 256 * MiB, 7);
}

/* ---- the documented algorithm, byte at a time ---- */

struct ref_chunker {
        uint64_t gear[256];
};

static void ref_init(struct ref_chunker *rc)
{
        uint64_t st = 0;
        /* The seed is the ASCII of "cairn-cd", read as a big-endian integer. */
        const char *seed = "cairn-cd";
        for (int i = 0; i < 8; i++)
                st = st << 8 | (uint8_t)seed[i];
        for (int i = 0; i < 256; i++)
                rc->gear[i] = splitmix64(&st);
}

/*
 * From each chunk start: skip the first min bytes; then for position i
 * (0-based within the chunk) roll fp = 2 fp + gear[byte] and cut after i if
 * the top log2(avg)+2 bits of fp are zero while i < avg, or the top
 * log2(avg)-2 bits once i >= avg; cut at max if nothing matched.
 */
static size_t ref_next(const struct ref_chunker *rc, const struct cairn_chunker_params *p,
                       const uint8_t *data, size_t len)
{
        unsigned bits = 0;
        while ((1u << (bits + 1)) <= p->avg_size)
                bits++;
        uint64_t strict = ~0ull << (64 - (bits + 1));
        uint64_t loose = ~0ull << (64 - (bits - 1));
        uint64_t fp = 0;
        if (len <= p->min_size)
                return len;
        for (size_t i = p->min_size; i < len && i < p->max_size; i++) {
                fp = (fp << 1) + rc->gear[data[i]];
                if (!(fp & (i < p->avg_size ? strict : loose)))
                        return i + 1;
        }
        return len < p->max_size ? len : p->max_size;
}

static void test_matches_documented_algorithm(void **state)
{
        (void)state;
        struct ref_chunker rc;
        ref_init(&rc);
        struct cairn_chunker_params def;
        cairn_chunker_params_default(&def);
        const struct cairn_chunker_params params[] = {
            tiny_params, small_params, def, {64, 128, 256}};
        size_t len = 24 * MiB;
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_random(buf, len, 2024);
        for (size_t k = 0; k < sizeof(params) / sizeof(params[0]); k++) {
                const struct cairn_chunker_params *p = &params[k];
                size_t off = 0, n = 0;
                while (off < len) {
                        size_t want = ref_next(&rc, p, buf + off, len - off);
                        size_t got = cairn_chunker_next(p, buf + off, len - off, 1);
                        if (got != want)
                                fail_msg("params %zu, chunk %zu at %zu: got %zu want %zu", k, n,
                                         off, got, want);
                        off += got;
                        n++;
                }
        }
        free(buf);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_params_default),
            cmocka_unit_test(test_params_validate),
            cmocka_unit_test(test_len_zero_and_tiny),
            cmocka_unit_test(test_prefix_contract),
            cmocka_unit_test(test_no_boundary_data),
            cmocka_unit_test(test_bounds_and_determinism),
            cmocka_unit_test(test_short_inputs),
            cmocka_unit_test(test_shift_resistance_small),
            cmocka_unit_test(test_shift_resistance_default),
            cmocka_unit_test(test_local_edit),
            cmocka_unit_test(test_average_size),
            cmocka_unit_test(test_matches_documented_algorithm),
        };
        return cmocka_run_group_tests_name("chunker", tests, NULL, NULL);
}
