/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 digests: the one identity of every chunk, pack and manifest.
 *
 * A digest is 32 raw bytes; its text form is "sha256:" followed by 64
 * lowercase hex digits.  Hashing uses OpenSSL's EVP interface so that the
 * SHA-NI code path is taken where the CPU has it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAIRN_DIGEST_SIZE 32
#define CAIRN_DIGEST_HEX_LEN 64
/* "sha256:" + 64 hex + NUL */
#define CAIRN_DIGEST_STR_SIZE (7 + CAIRN_DIGEST_HEX_LEN + 1)

struct cairn_digest {
        uint8_t bytes[CAIRN_DIGEST_SIZE];
};

/* One-shot SHA-256 of len bytes at data. */
void cairn_sha256(const void *data, size_t len, struct cairn_digest *ret_digest);

/* Incremental hashing: an opaque handle, freed with cairn_sha256_ctx_free(). */
struct cairn_sha256_ctx;
int cairn_sha256_ctx_new(struct cairn_sha256_ctx **ret_ctx);
void cairn_sha256_ctx_update(struct cairn_sha256_ctx *ctx, const void *data, size_t len);
void cairn_sha256_ctx_final(struct cairn_sha256_ctx *ctx, struct cairn_digest *ret_digest);
void cairn_sha256_ctx_free(struct cairn_sha256_ctx *ctx);

/* 64 lowercase hex digits + NUL into buf (at least 65 bytes). */
void cairn_digest_to_hex(const struct cairn_digest *d, char *buf);
/* "sha256:<hex>" + NUL into buf (at least CAIRN_DIGEST_STR_SIZE bytes). */
void cairn_digest_to_string(const struct cairn_digest *d, char *buf);
/* Parses exactly 64 hex digits (either case); -EINVAL otherwise. */
int cairn_digest_from_hex(const char *hex, size_t len, struct cairn_digest *ret_digest);
/* Parses "sha256:<64 hex>"; -EINVAL otherwise. */
int cairn_digest_from_string(const char *s, struct cairn_digest *ret_digest);
bool cairn_digest_equal(const struct cairn_digest *a, const struct cairn_digest *b);
