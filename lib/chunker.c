/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FastCDC-style content-defined chunking.
 *
 * A gear hash (fp = (fp << 1) + gear[byte]) rolls over the data; a boundary
 * is declared where its top bits are zero.  Normalized chunking uses a
 * stricter mask before the average size and a looser one after it, which
 * narrows the size distribution around avg.  Hashing starts at min, so the
 * first min bytes of every chunk cost nothing.  The gear table comes from a
 * fixed splitmix64 sequence, so boundaries are the same on every machine
 * (docs/FORMAT.md gives the exact procedure).
 */
#include <errno.h>

#include "cairn/chunker.h"

static uint64_t gear[256];

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

__attribute__((constructor)) static void gear_init(void)
{
        uint64_t state = 0x636169726e2d6364ull; /* "cairn-cd" */
        for (int i = 0; i < 256; i++)
                gear[i] = splitmix64(&state);
}

void cairn_chunker_params_default(struct cairn_chunker_params *ret_params)
{
        ret_params->min_size = CAIRN_CHUNK_MIN_DEFAULT;
        ret_params->avg_size = CAIRN_CHUNK_AVG_DEFAULT;
        ret_params->max_size = CAIRN_CHUNK_MAX_DEFAULT;
}

int cairn_chunker_params_validate(const struct cairn_chunker_params *p)
{
        if (p->min_size < CAIRN_CHUNK_MIN_LIMIT || p->max_size > CAIRN_CHUNK_MAX_LIMIT)
                return -EINVAL;
        if (!(p->min_size < p->avg_size && p->avg_size < p->max_size))
                return -EINVAL;
        if (p->avg_size & (p->avg_size - 1))
                return -EINVAL;
        return 0;
}

static unsigned log2_u32(uint32_t v)
{
        return 31u - (unsigned)__builtin_clz(v);
}

/* The top n bits of a u64 set. */
static uint64_t top_bits(unsigned n)
{
        if (n == 0)
                return 0;
        if (n >= 64)
                return ~0ull;
        return ~0ull << (64 - n);
}

size_t cairn_chunker_next(const struct cairn_chunker_params *p, const uint8_t *data, size_t len,
                          int at_eof)
{
        if (len == 0)
                return 0;
        if (len <= p->min_size)
                return at_eof ? len : 0;

        unsigned bits = log2_u32(p->avg_size);
        uint64_t mask_small = top_bits(bits + 1);
        uint64_t mask_large = top_bits(bits - 1);
        size_t end = len < p->max_size ? len : p->max_size;
        size_t normal = p->avg_size < end ? p->avg_size : end;
        uint64_t fp = 0;
        size_t i = p->min_size;

        for (; i < normal; i++) {
                fp = (fp << 1) + gear[data[i]];
                if (!(fp & mask_small))
                        return i + 1;
        }
        for (; i < end; i++) {
                fp = (fp << 1) + gear[data[i]];
                if (!(fp & mask_large))
                        return i + 1;
        }
        if (end == p->max_size || at_eof)
                return end;
        return 0;
}
