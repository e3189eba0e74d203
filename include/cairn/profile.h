/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access profiles: the order in which a workload first read chunks,
 * recorded by a mount and replayed by the next mount or by `cairn warm`,
 * so that a model loader's scattered cold start becomes one stream.
 *
 * Chunks are named by id (SHA-256), not by index, so a profile recorded on
 * one version of a volume still helps a rebuilt version for the chunks
 * they share.  The file is text: the line "cairn-profile 1", then one
 * chunk id (64 lowercase hex digits) per line.  It is untrusted input
 * when replayed: parsing is strict and bounded.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cairn/digest.h"
#include "cairn/manifest.h"

#define CAIRN_PROFILE_HEADER "cairn-profile 1\n"
/* Largest profile accepted (ids); a 64 TiB volume of 2 MiB chunks has 32M. */
#define CAIRN_PROFILE_MAX_IDS (64u * 1024 * 1024)

struct cairn_profile {
        struct cairn_digest *ids;
        size_t n;
};

/* Parses profile text; -EINVAL (reason in errbuf) on anything malformed, -E2BIG past the cap. */
int cairn_profile_parse(const char *text, size_t len, struct cairn_profile *ret_profile,
                        char *errbuf, size_t errlen);
/* Reads and parses a profile file. */
int cairn_profile_load(const char *path, struct cairn_profile *ret_profile, char *errbuf,
                       size_t errlen);
void cairn_profile_release(struct cairn_profile *profile);
/* Writes ids as a profile file atomically (temp file + rename). */
int cairn_profile_write(const char *path, const struct cairn_digest *ids, size_t n);
/*
 * Maps the profile onto a manifest: for each id, in profile order, the
 * first chunk index with that id; ids the manifest lacks are skipped.
 * *ret_chunks is heap-allocated (caller frees), *ret_n its length.
 */
int cairn_profile_resolve(const struct cairn_profile *profile, const struct cairn_manifest *m,
                          uint64_t **ret_chunks, size_t *ret_n);
