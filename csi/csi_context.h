/* SPDX-License-Identifier: Apache-2.0 */
/*
 * volume_context: what a PersistentVolume's volumeAttributes (or an inline
 * volume's) say about the cairn volume to mount.  Documented keys:
 *
 *   store          required; file:///abs/path, http(s)://host/path or
 *                  s3://bucket[/prefix]; no credentials, query or fragment
 *   ref            required; NAME:TAG or NAME@sha256:HEX
 *   memory_limit   cairnfs -o memory_limit= (64M, 1G, ...)
 *   prefetch       cairnfs -o prefetch=: auto (replay the volume's stored
 *                  access profile, the default), all or none
 *   region         s3 stores: the bucket's region
 *   endpoint       s3 stores: http(s)://host[:port] of an S3-compatible service
 *   csi.storage.k8s.io/ephemeral   "true" for an inline ephemeral volume
 *
 * Other csi.storage.k8s.io/ keys (pod information) are ignored; any other
 * key is refused, so that a misspelt option fails loudly instead of being
 * dropped.  Only validated values ever reach cairnfs's command line.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct csi_kv {
        const char *key;
        const char *value;
};

struct csi_context {
        char *store;
        char *ref;
        char *memory_limit; /* NULL: cairnfs's default */
        char *prefetch;     /* auto, all, none; NULL: cairnfs's default */
        char *region;       /* NULL: none */
        char *endpoint;     /* NULL: none */
        bool ephemeral;
};

#define CSI_CONTEXT_VALUE_MAX 1024

/* ret_ctx is filled only on success; -EINVAL with a reason in errbuf otherwise. */
int csi_context_parse(const struct csi_kv *kv, size_t n, struct csi_context *ret_ctx, char *errbuf,
                      size_t errlen);
/* Checks a complete context (e.g. one read back from the state directory). */
int csi_context_validate(const struct csi_context *ctx, char *errbuf, size_t errlen);
void csi_context_release(struct csi_context *ctx);
/* Same volume, same options (the ephemeral flag is not compared). */
bool csi_context_equal(const struct csi_context *a, const struct csi_context *b);
bool csi_context_is_s3(const struct csi_context *ctx);

/* The cairnfs source argument "STORE#REF" (malloc'ed). */
int csi_context_source(const struct csi_context *ctx, char **ret_source);
/* The cairnfs -o argument: "allow_other,cache_dir=DIR[,memory_limit=...]". */
int csi_context_mount_options(const struct csi_context *ctx, const char *cache_dir,
                              char **ret_options);
