/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Building a volume from a directory tree: walk, chunk, hash, compress,
 * pack, write the manifest, then the ref (last, so a failed build leaves
 * the tag as it was).
 *
 * Chunks already present in the tag's previous manifest or in the --base
 * volume are referenced, not rewritten.  Hashing and compression run on a
 * pool of worker threads; the walk and pack writing stay in order so that
 * builds are deterministic and a file's chunks are contiguous in its pack.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cairn/chunker.h"
#include "cairn/digest.h"

struct cairn_store;

#define CAIRN_PACK_MAX_DEFAULT (1ull << 30)
#define CAIRN_COMPRESSION_LEVEL_DEFAULT 3

struct cairn_build_options {
        const char *src_dir;
        struct cairn_store *store;     /* borrowed */
        const char *name;              /* ref name, validated */
        const char *tag;
        const char *base_ref;          /* optional "NAME:TAG" or "NAME@sha256:..." */
        const char *profile_path;      /* optional access profile stored with the volume */
        struct cairn_chunker_params chunking;
        int compression_level;         /* zstd level, 1..19 */
        unsigned threads;              /* 0: one per CPU */
        uint64_t pack_max;             /* roll packs at file boundaries past this */
        bool progress;                 /* progress line on stderr */
        /*
         * Called for each entry that is not a directory, regular file or
         * symlink (skipped); path is relative to src_dir.  NULL: logged at
         * debug level only.
         */
        void (*on_skip)(const char *path, const char *why, void *userdata);
        void *userdata;
};

void cairn_build_options_init(struct cairn_build_options *opts);

struct cairn_build_result {
        struct cairn_digest manifest;
        uint64_t manifest_size;
        uint64_t dirs, files, symlinks, skipped;
        uint64_t logical_bytes;        /* file bytes read */
        uint64_t chunks;               /* chunk references */
        uint64_t new_chunks;           /* chunks written to new packs */
        uint64_t reused_chunks;        /* chunks found in base/previous/this build */
        uint64_t new_pack_bytes;       /* bytes of packs created by this build */
        uint32_t packs_written;
        bool previous_unusable;        /* the tag's previous manifest could not seed dedup */
        uint64_t profile_chunks;       /* entries of the stored profile */
};

/*
 * Builds and tags the volume.  On failure returns -errno, writes no ref,
 * removes the packs it created, and puts a one-line reason in errbuf.
 */
int cairn_build(const struct cairn_build_options *opts, struct cairn_build_result *ret_result,
                char *errbuf, size_t errlen);
