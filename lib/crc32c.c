/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC-32C.  The SSE4.2 crc32 instruction does 8 bytes per step; three
 * independent streams hide its 3-cycle latency so a cache hit is checked at
 * well over 10 GB/s.  A table-driven fallback serves other CPUs.  Both
 * produce the standard (reflected, ~init, ~final) CRC-32C.
 */
#include <stdbool.h>
#include <string.h>

#include "cairn/crc32c.h"

#define POLY 0x82f63b78u

static uint32_t table[8][256];
static bool have_sse42;

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len);
#if defined(__x86_64__)
enum { HW_BLOCK = 8192 };
static uint32_t shift_table[2][4][256]; /* by HW_BLOCK and 2 * HW_BLOCK bytes */
static void shift_table_init(uint32_t t[4][256], size_t nbytes);
#endif

__attribute__((constructor)) static void crc32c_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
                table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
#if defined(__x86_64__)
        __builtin_cpu_init();
        have_sse42 = __builtin_cpu_supports("sse4.2");
        if (have_sse42) {
                shift_table_init(shift_table[0], HW_BLOCK);
                shift_table_init(shift_table[1], 2 * HW_BLOCK);
        }
#endif
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
        while (len >= 8) {
                uint64_t v;
                memcpy(&v, p, 8);
                v ^= crc;
                crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
                      table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^
                      table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
                p += 8;
                len -= 8;
        }
        while (len--)
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        return crc;
}

#if defined(__x86_64__)
/*
 * The three hardware streams are merged by shifting a CRC over n zero
 * bytes, a linear map on its 32 bits; it is tabulated per byte once.
 */
static void shift_table_init(uint32_t t[4][256], size_t nbytes)
{
        static const uint8_t zeros[HW_BLOCK * 2];
        uint32_t basis[32];
        for (int b = 0; b < 32; b++)
                basis[b] = crc32c_sw(1u << b, zeros, nbytes);
        for (int byte = 0; byte < 4; byte++)
                for (uint32_t v = 0; v < 256; v++) {
                        uint32_t r = 0;
                        for (int k = 0; k < 8; k++)
                                if (v & (1u << k))
                                        r ^= basis[byte * 8 + k];
                        t[byte][v] = r;
                }
}

static uint32_t crc_shift(uint32_t t[4][256], uint32_t crc)
{
        return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^
               t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t len)
{
        /* Three interleaved streams over blocks of 3 * BLOCK bytes. */
        enum { BLOCK = HW_BLOCK };
        uint64_t c0 = crc;
        while (len >= 3 * BLOCK) {
                uint64_t c1 = 0, c2 = 0;
                for (size_t i = 0; i < BLOCK; i += 8) {
                        uint64_t a, b, c;
                        memcpy(&a, p + i, 8);
                        memcpy(&b, p + BLOCK + i, 8);
                        memcpy(&c, p + 2 * BLOCK + i, 8);
                        c0 = __builtin_ia32_crc32di(c0, a);
                        c1 = __builtin_ia32_crc32di(c1, b);
                        c2 = __builtin_ia32_crc32di(c2, c);
                }
                /* crc(A|B|C) = shift(crc(A), |B|+|C|) ^ shift(crc0(B), |C|) ^ crc0(C) */
                c0 = crc_shift(shift_table[1], (uint32_t)c0) ^ crc_shift(shift_table[0], (uint32_t)c1) ^ c2;
                p += 3 * BLOCK;
                len -= 3 * BLOCK;
        }
        while (len >= 8) {
                uint64_t v;
                memcpy(&v, p, 8);
                c0 = __builtin_ia32_crc32di(c0, v);
                p += 8;
                len -= 8;
        }
        uint32_t c = (uint32_t)c0;
        while (len--)
                c = __builtin_ia32_crc32qi(c, *p++);
        return c;
}
#endif

uint32_t cairn_crc32c(uint32_t crc, const void *data, size_t len)
{
        crc = ~crc;
#if defined(__x86_64__)
        if (have_sse42)
                return ~crc32c_hw(crc, data, len);
#endif
        return ~crc32c_sw(crc, data, len);
}
