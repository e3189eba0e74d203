/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Content-defined chunking (FastCDC-style gear hash with normalized chunking).
 *
 * Boundaries depend only on the bytes and the parameters, so an insertion
 * near the start of a file shifts at most a couple of chunks.  The exact
 * algorithm and gear table are specified in docs/FORMAT.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define CAIRN_CHUNK_MIN_DEFAULT (512u * 1024)
#define CAIRN_CHUNK_AVG_DEFAULT (2u * 1024 * 1024)
#define CAIRN_CHUNK_MAX_DEFAULT (8u * 1024 * 1024)
/* Hard limits accepted by builders and manifests. */
#define CAIRN_CHUNK_MIN_LIMIT 64u
#define CAIRN_CHUNK_MAX_LIMIT (64u * 1024 * 1024)

struct cairn_chunker_params {
        uint32_t min_size;
        uint32_t avg_size; /* a power of two */
        uint32_t max_size;
};

/* The defaults above. */
void cairn_chunker_params_default(struct cairn_chunker_params *ret_params);

/* -EINVAL unless MIN_LIMIT <= min < avg < max <= MAX_LIMIT and avg is a power of two. */
int cairn_chunker_params_validate(const struct cairn_chunker_params *p);

/*
 * Returns the length of the next chunk starting at data[0], given len
 * available bytes.  When len < max_size and more input may follow, callers
 * must pass at_eof = 0: the function then returns 0 if no boundary was found
 * inside the available bytes (the caller must supply more).  With at_eof = 1
 * it always returns a length in [1, min(len, max_size)] for len > 0.
 */
size_t cairn_chunker_next(const struct cairn_chunker_params *p, const uint8_t *data, size_t len,
                          int at_eof);
