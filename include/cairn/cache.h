/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node-local chunk cache: verified, uncompressed chunks stored as
 * content-addressed files under DIR/chunks/<2 hex>/<64 hex>, plus verified
 * manifests under DIR/manifests/<64 hex>.
 *
 * Entries are written to DIR/tmp and renamed into place, so a reader never
 * sees a partial entry; each chunk entry carries a header with its length
 * and a CRC-32C of its bytes, checked on every read, so damage on local
 * disk is detected and the entry dropped.  Several processes may share one
 * cache directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/digest.h"

#define CAIRN_CACHE_ENTRY_MAGIC "CAIRNCE1"
#define CAIRN_CACHE_ENTRY_HEADER_SIZE 16u

struct cairn_cache;

/* Opens (creating if needed) the cache at dir. */
int cairn_cache_open(const char *dir, struct cairn_cache **ret_cache);
void cairn_cache_free(struct cairn_cache *cache);
const char *cairn_cache_dir(const struct cairn_cache *cache);

/*
 * Reads the chunk id of exactly size bytes into buf.  0 on a hit;
 * -ENOENT on a miss; a damaged entry is removed and reported as -ENOENT.
 */
int cairn_cache_get(struct cairn_cache *cache, const struct cairn_digest *id, void *buf,
                    uint32_t size);
/* True when an entry for id exists (not checked: a hint for read coalescing). */
bool cairn_cache_contains(struct cairn_cache *cache, const struct cairn_digest *id);
/* Stores a chunk that the caller has verified.  Failures are not fatal to readers. */
int cairn_cache_put(struct cairn_cache *cache, const struct cairn_digest *id, const void *data,
                    uint32_t size);
/* Path of the cached manifest file for digest d (may not exist) into buf. */
int cairn_cache_manifest_path(const struct cairn_cache *cache, const struct cairn_digest *d,
                              char *buf, size_t len);

/* Default cache dir: /var/cache/cairn for root, $XDG_CACHE_HOME/cairn (or ~/.cache/cairn). */
int cairn_cache_default_dir(char *buf, size_t len);
