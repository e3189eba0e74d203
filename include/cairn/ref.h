/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Volume references: "NAME:TAG" (resolved through refs/NAME/TAG in the
 * store) or "NAME@sha256:<hex>" (a manifest digest, no lookup).
 *
 * NAME is one or more '/'-separated components of [a-z0-9][a-z0-9._-]*,
 * at most CAIRN_REF_NAME_MAX bytes; TAG is [A-Za-z0-9_.-]{1,128} and is
 * never "." or "..".  These rules keep every ref a safe relative path.
 */
#pragma once

#include <stdbool.h>

#include "cairn/digest.h"

#define CAIRN_REF_NAME_MAX 255
#define CAIRN_REF_TAG_MAX 128

struct cairn_ref {
        char name[CAIRN_REF_NAME_MAX + 1];
        char tag[CAIRN_REF_TAG_MAX + 1]; /* "" when by digest */
        bool by_digest;
        struct cairn_digest digest;      /* valid when by_digest */
};

/* -EINVAL on anything malformed; ret_ref untouched then. */
int cairn_ref_parse(const char *s, struct cairn_ref *ret_ref);
bool cairn_ref_name_valid(const char *name);
bool cairn_ref_tag_valid(const char *tag);
/*
 * Parses the content of a ref object (refs/NAME/TAG in a store): exactly
 * "sha256:<64 lowercase hex>" with an optional final "\n".  The bytes are
 * untrusted (they may come from the network): len is honoured, no NUL is
 * needed, anything else is -EINVAL.
 */
#define CAIRN_REF_OBJECT_MAX 72
int cairn_ref_object_parse(const char *buf, size_t len, struct cairn_digest *ret_digest);

/* "NAME:TAG" or "NAME@sha256:hex" into buf; -ENAMETOOLONG if it does not fit. */
int cairn_ref_format(const struct cairn_ref *ref, char *buf, size_t len);
