/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC-32C (Castagnoli): the cheap checksum that guards chunk-cache entries.
 *
 * Chunks are verified with SHA-256 once, when fetched; after that a cache
 * entry only has to prove it was not torn or damaged on local disk, which a
 * CRC does at memory speed (SSE4.2 instruction where available).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Continues crc over len bytes; start with crc = 0. */
uint32_t cairn_crc32c(uint32_t crc, const void *data, size_t len);
