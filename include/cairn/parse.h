/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict parsing of the numbers and sizes that options take.  Strict on
 * purpose: a value that does not parse completely, or does not fit, is an
 * error rather than a silently truncated number.
 */
#pragma once

#include <stdint.h>

/*
 * A byte size: decimal digits with an optional binary suffix K, M, G, T
 * (case-insensitive, optionally followed by "iB" or "B"), or a plain "B".
 * -EINVAL when malformed, -ERANGE when it overflows or exceeds max.
 */
int cairn_parse_size(const char *s, uint64_t max, uint64_t *ret_size);

/* A plain decimal integer in [min, max]; -EINVAL or -ERANGE. */
int cairn_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value);
