/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AWS Signature Version 4, implemented with OpenSSL (HMAC-SHA256).
 *
 * Reproduces the AWS SigV4 test suite byte for byte (canonical request,
 * string to sign, signature; header and query-string forms; normalized
 * and unnormalized paths — S3 signs paths unnormalized).
 *
 * Secrets are only ever read from the credentials struct; intermediate
 * keys are wiped with OPENSSL_cleanse before returning.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct cairn_sigv4_header {
        const char *name;  /* as sent; compared case-insensitively */
        const char *value; /* as sent; trimmed and whitespace-folded by the signer */
};

struct cairn_sigv4_credentials {
        const char *access_key;
        const char *secret_key;
        const char *session_token; /* NULL if none */
};

struct cairn_sigv4_request {
        const char *method;
        const char *path;        /* request path as sent (percent-encoded), e.g. "/bucket/a%20b" */
        const char *query;       /* raw query string without '?', "" if none */
        const struct cairn_sigv4_header *headers; /* must include "host" */
        size_t nheaders;
        const char *payload_hash; /* lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
};

struct cairn_sigv4_params {
        const char *region;
        const char *service;     /* "s3" */
        time_t timestamp;        /* signing time (UTC seconds) */
        bool normalize_path;     /* false for S3 */
        bool query_form;         /* presigned URL form instead of an Authorization header */
        unsigned expires;        /* query form: X-Amz-Expires seconds */
        bool omit_session_token_from_signature; /* some services add it after signing */
};

/* Results; every string is heap-allocated and freed by cairn_sigv4_result_release(). */
struct cairn_sigv4_result {
        char *canonical_request;
        char *string_to_sign;
        char signature[65];      /* lowercase hex */
        char *authorization;     /* header form: value of the Authorization header */
        char *query;             /* query form: the full signed query string (without '?') */
        char amz_date[17];       /* "YYYYMMDDTHHMMSSZ": send as X-Amz-Date in header form */
};

/*
 * Signs req.  In header form the caller must also send X-Amz-Date (and
 * X-Amz-Security-Token when there is a session token); if those headers
 * are in req->headers they are signed as given, otherwise the signer adds
 * them to the canonical request itself.
 */
int cairn_sigv4_sign(const struct cairn_sigv4_request *req, const struct cairn_sigv4_params *params,
                     const struct cairn_sigv4_credentials *creds,
                     struct cairn_sigv4_result *ret_result);
void cairn_sigv4_result_release(struct cairn_sigv4_result *result);

/*
 * Percent-encodes s (len bytes) per SigV4/S3: unreserved A-Z a-z 0-9 - _ . ~
 * kept, everything else %XX (uppercase); '/' kept when keep_slash.
 * Writes into a new heap string in *ret.
 */
int cairn_sigv4_uri_encode(const char *s, size_t len, bool keep_slash, char **ret);
