/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CSI secrets (nodeStageSecretRef / nodePublishSecretRef) for s3:// stores.
 * Accepted keys are the AWS names, as environment variables or as in the
 * shared credentials file: AWS_ACCESS_KEY_ID / aws_access_key_id,
 * AWS_SECRET_ACCESS_KEY / aws_secret_access_key, AWS_SESSION_TOKEN /
 * aws_session_token.
 *
 * They reach cairnfs through files, never through argv or the environment:
 * for each mount a private directory (0700) under STATE_DIR/secrets gets an
 * AWS shared credentials file and an AWS config file (region, endpoint_url;
 * both 0600), cairnfs is pointed at them with AWS_SHARED_CREDENTIALS_FILE
 * and AWS_CONFIG_FILE (paths, not secrets), and the directory is removed
 * as soon as cairnfs has mounted (it reads them once, when it opens the
 * store).  Values are wiped from memory when released, and never appear in
 * an error message.
 */
#pragma once

#include <stddef.h>

#include "csi_context.h"

struct csi_secrets {
        char *access_key;
        char *secret_key;
        char *session_token;
};

#define CSI_SECRET_VALUE_MAX 4096

/* -EINVAL with a reason (naming no value) in errbuf. */
int csi_secrets_parse(const struct csi_kv *kv, size_t n, struct csi_secrets *ret_secrets,
                      char *errbuf, size_t errlen);
/* Wipes and frees. */
void csi_secrets_release(struct csi_secrets *secrets);
int csi_secrets_empty(const struct csi_secrets *secrets);

/*
 * Creates a new private directory under parent (which must exist) and
 * writes "credentials" (secrets may be empty: an anonymous profile) and
 * "config" (ctx's region and endpoint) in it.  *ret_dir is malloc'ed.
 */
int csi_secrets_write(const char *parent, const struct csi_secrets *secrets,
                      const struct csi_context *ctx, char **ret_dir);
/* Removes what csi_secrets_write() made (and any other file in dir). */
int csi_secrets_remove(const char *dir);
/* Removes every leftover directory under parent (from a crash mid-mount). */
void csi_secrets_cleanup(const char *parent);
