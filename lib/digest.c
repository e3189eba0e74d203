/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 through OpenSSL's EVP interface (which picks SHA-NI where the CPU
 * has it), plus the hex text forms used in refs, paths and output.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"

struct cairn_sha256_ctx {
        EVP_MD_CTX *md;
};

/*
 * Fetching the algorithm once avoids a provider lookup on every hash, which
 * costs more than hashing a small chunk.
 */
static const EVP_MD *sha256_md(void)
{
        static EVP_MD *md;
        EVP_MD *m = __atomic_load_n(&md, __ATOMIC_ACQUIRE);
        if (m)
                return m;
        m = EVP_MD_fetch(NULL, "SHA256", NULL);
        EVP_MD *expected = NULL;
        if (!__atomic_compare_exchange_n(&md, &expected, m, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
                EVP_MD_free(m);
                m = expected;
        }
        return m;
}

void cairn_sha256(const void *data, size_t len, struct cairn_digest *ret_digest)
{
        unsigned int n = 0;
        /* EVP_Digest only fails on allocation failure or a broken provider. */
        if (EVP_Digest(data, len, ret_digest->bytes, &n, sha256_md(), NULL) != 1 ||
            n != CAIRN_DIGEST_SIZE)
                abort();
}

int cairn_sha256_ctx_new(struct cairn_sha256_ctx **ret_ctx)
{
        struct cairn_sha256_ctx *ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
                return -ENOMEM;
        ctx->md = EVP_MD_CTX_new();
        if (!ctx->md || EVP_DigestInit_ex(ctx->md, sha256_md(), NULL) != 1) {
                EVP_MD_CTX_free(ctx->md);
                free(ctx);
                return -ENOMEM;
        }
        *ret_ctx = ctx;
        return 0;
}

void cairn_sha256_ctx_update(struct cairn_sha256_ctx *ctx, const void *data, size_t len)
{
        if (EVP_DigestUpdate(ctx->md, data, len) != 1)
                abort();
}

void cairn_sha256_ctx_final(struct cairn_sha256_ctx *ctx, struct cairn_digest *ret_digest)
{
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(ctx->md, ret_digest->bytes, &n) != 1 || n != CAIRN_DIGEST_SIZE)
                abort();
        /* Ready for reuse. */
        EVP_DigestInit_ex(ctx->md, sha256_md(), NULL);
}

void cairn_sha256_ctx_free(struct cairn_sha256_ctx *ctx)
{
        if (!ctx)
                return;
        EVP_MD_CTX_free(ctx->md);
        free(ctx);
}

void cairn_digest_to_hex(const struct cairn_digest *d, char *buf)
{
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < CAIRN_DIGEST_SIZE; i++) {
                buf[2 * i] = hex[d->bytes[i] >> 4];
                buf[2 * i + 1] = hex[d->bytes[i] & 0xf];
        }
        buf[CAIRN_DIGEST_HEX_LEN] = '\0';
}

void cairn_digest_to_string(const struct cairn_digest *d, char *buf)
{
        memcpy(buf, "sha256:", 7);
        cairn_digest_to_hex(d, buf + 7);
}

static int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int cairn_digest_from_hex(const char *hex, size_t len, struct cairn_digest *ret_digest)
{
        struct cairn_digest d;
        if (len != CAIRN_DIGEST_HEX_LEN)
                return -EINVAL;
        for (size_t i = 0; i < CAIRN_DIGEST_SIZE; i++) {
                int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                d.bytes[i] = (uint8_t)(hi << 4 | lo);
        }
        *ret_digest = d;
        return 0;
}

int cairn_digest_from_string(const char *s, struct cairn_digest *ret_digest)
{
        if (strncmp(s, "sha256:", 7) != 0)
                return -EINVAL;
        return cairn_digest_from_hex(s + 7, strlen(s + 7), ret_digest);
}

bool cairn_digest_equal(const struct cairn_digest *a, const struct cairn_digest *b)
{
        return memcmp(a->bytes, b->bytes, CAIRN_DIGEST_SIZE) == 0;
}
