/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How fast does content-defined chunking resynchronize after an insertion?
 *
 * For TRIALS random 200 MiB files, inserts 1 MiB of random bytes at the
 * start and counts the bytes of the new file's chunks that do not exist in
 * the old file's chunking: the pack bytes a rebuild would add.  The cutting
 * rule is the one in docs/FORMAT.md section 3.3 with the normalization
 * LEVEL as a parameter (cairn uses 1), so levels can be compared.
 *
 *   cc -O2 -o /tmp/resync bench/chunker_resync.c && /tmp/resync 150 1
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t gear[256];
static unsigned level;
static const size_t min_size = 512 << 10, avg_size = 2 << 20, max_size = 8 << 20;

static uint64_t splitmix64(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static uint64_t top_bits(unsigned n)
{
        return n ? ~0ull << (64 - n) : 0;
}

static size_t cut(const uint8_t *d, size_t len)
{
        if (len <= min_size)
                return len;
        unsigned bits = 21; /* log2(avg_size) */
        uint64_t small = top_bits(bits + level), large = top_bits(bits - level), fp = 0;
        size_t end = len < max_size ? len : max_size, normal = avg_size < end ? avg_size : end;
        size_t i = min_size;
        for (; i < normal; i++) {
                fp = (fp << 1) + gear[d[i]];
                if (!(fp & small))
                        return i + 1;
        }
        for (; i < end; i++) {
                fp = (fp << 1) + gear[d[i]];
                if (!(fp & large))
                        return i + 1;
        }
        return end;
}

int main(int argc, char **argv)
{
        if (argc != 3) {
                fprintf(stderr, "usage: %s TRIALS LEVEL\n", argv[0]);
                return 2;
        }
        int trials = atoi(argv[1]);
        level = (unsigned)atoi(argv[2]);
        uint64_t state = 0x636169726e2d6364ull;
        for (int i = 0; i < 256; i++)
                gear[i] = splitmix64(&state);

        size_t n = 200u << 20, ins = 1u << 20, cap = n / min_size + 2;
        uint8_t *a = malloc(n), *b = malloc(n + ins);
        size_t *start = malloc(cap * sizeof(*start)), *end = malloc(cap * sizeof(*end));
        FILE *rnd = fopen("/dev/urandom", "r");
        if (!a || !b || !start || !end || !rnd)
                return 1;
        double sum = 0, worst = 0;
        for (int t = 0; t < trials; t++) {
                if (fread(a, 1, n, rnd) != n || fread(b, 1, ins, rnd) != ins)
                        return 1;
                memcpy(b + ins, a, n);
                size_t nb = 0, off = 0, fresh = 0, j = 0;
                while (off < n) {
                        size_t c = cut(a + off, n - off);
                        start[nb] = off;
                        end[nb++] = off + c;
                        off += c;
                }
                for (off = 0; off < n + ins;) {
                        size_t c = cut(b + off, n + ins - off);
                        while (j < nb && start[j] + ins < off)
                                j++;
                        int shared = off >= ins && j < nb && start[j] + ins == off &&
                                     end[j] + ins == off + c;
                        if (!shared)
                                fresh += c;
                        off += c;
                }
                double pct = 100.0 * (double)fresh / (double)(n + ins);
                sum += pct;
                worst = pct > worst ? pct : worst;
        }
        printf("level %u: %d trials, new bytes mean %.2f%%, worst %.2f%%\n", level, trials,
               sum / trials, worst);
        return 0;
}
