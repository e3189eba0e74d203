/* SPDX-License-Identifier: Apache-2.0 */
/*
 * S3 configuration, resolved the AWS way:
 *   endpoint:    option > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL > profile
 *                "endpoint_url" > https://s3.<region>.amazonaws.com
 *   region:      option > AWS_REGION > AWS_DEFAULT_REGION > profile "region" > us-east-1
 *   credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)
 *                > profile (option > AWS_PROFILE > "default") in the shared
 *                credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)
 *                and config file (AWS_CONFIG_FILE, ~/.aws/config)
 *                > anonymous (unsigned requests);
 *                a profile given as an option beats the environment's keys
 *                (as `aws --profile` does), and a named profile that exists
 *                in neither file is an error (-ENOENT), not anonymous access
 *   addressing:  path style for custom endpoints, virtual-hosted for AWS;
 *                an option overrides.
 * Secrets are wiped (OPENSSL_cleanse) when the config is released and never
 * appear in error messages.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cairn/store.h"

struct cairn_s3_config {
        char *endpoint;       /* scheme://host[:port], no trailing slash */
        char *region;
        char *access_key;     /* NULL: anonymous */
        char *secret_key;
        char *session_token;  /* NULL if none */
        bool path_style;
};

/* A region name S3 requests can carry (host names, credential scope): 1-64 of [A-Za-z0-9_-]. */
bool cairn_s3_region_valid(const char *s);

/* Resolves the configuration; -EINVAL with a reason in errbuf on malformed input. */
int cairn_s3_config_load(const struct cairn_store_options *opts, struct cairn_s3_config *ret_config,
                         char *errbuf, size_t errlen);
void cairn_s3_config_release(struct cairn_s3_config *config);

/*
 * Parses an INI-style AWS shared file (credentials or config) for one
 * profile; in the config file profiles are "[profile NAME]" except
 * "[default]".  Calls found(key, value, ctx) for each key of the profile
 * (lowercased; a nested "s3 =" block gives "s3.KEY").  Returns 1 if the
 * profile's section is in the text, 0 if not, -EINVAL if the text is
 * malformed.  Bounded: files over 1 MiB are rejected (-EFBIG).
 */
int cairn_s3_ini_parse(const char *text, size_t len, const char *profile, bool config_file,
                       void (*found)(const char *key, const char *value, void *ctx), void *ctx);

/*
 * Parses an S3 XML error body: fills code and message (each truncated and
 * NUL-terminated, message sanitized to printable ASCII).  -EINVAL if the
 * body is not an S3 <Error>; a body cut short (error bodies are read with
 * a cap) still counts once its <Code> is complete.  Never reads past len.
 */
int cairn_s3_parse_error(const char *xml, size_t len, char *code, size_t code_len, char *message,
                         size_t message_len);
/*
 * Parses a CreateMultipartUpload response for its <UploadId>: -EINVAL if
 * there is none, -EOVERFLOW if it does not fit (ids are never truncated).
 */
int cairn_s3_parse_upload_id(const char *xml, size_t len, char *upload_id, size_t upload_id_len);
