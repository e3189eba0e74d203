/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing and validating volume references.  The grammar is strict on
 * purpose: names and tags become store paths (refs/<name>/<tag>), so
 * nothing that could climb out of refs/ or collide on case-insensitive
 * object stores is accepted.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cairn/ref.h"

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool cairn_ref_name_valid(const char *name)
{
        size_t len = strlen(name);
        if (len == 0 || len > CAIRN_REF_NAME_MAX)
                return false;
        bool component_start = true;
        for (size_t i = 0; i < len; i++) {
                char c = name[i];
                if (component_start) {
                        if (!is_lower_alnum(c))
                                return false;
                        component_start = false;
                } else if (c == '/') {
                        component_start = true;
                } else if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-') {
                        return false;
                }
        }
        return !component_start;
}

bool cairn_ref_tag_valid(const char *tag)
{
        size_t len = strlen(tag);
        if (len == 0 || len > CAIRN_REF_TAG_MAX)
                return false;
        if (strcmp(tag, ".") == 0 || strcmp(tag, "..") == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = tag[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '-'))
                        return false;
        }
        return true;
}

int cairn_ref_parse(const char *s, struct cairn_ref *ret_ref)
{
        struct cairn_ref ref = {0};
        const char *at = strchr(s, '@');
        if (at) {
                size_t n = (size_t)(at - s);
                if (n == 0 || n > CAIRN_REF_NAME_MAX)
                        return -EINVAL;
                memcpy(ref.name, s, n);
                ref.name[n] = '\0';
                if (!cairn_ref_name_valid(ref.name))
                        return -EINVAL;
                if (cairn_digest_from_string(at + 1, &ref.digest) < 0)
                        return -EINVAL;
                ref.by_digest = true;
        } else {
                /* Names never contain ':', so the tag starts after the last one. */
                const char *colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                size_t n = (size_t)(colon - s);
                if (n == 0 || n > CAIRN_REF_NAME_MAX || strlen(colon + 1) > CAIRN_REF_TAG_MAX)
                        return -EINVAL;
                memcpy(ref.name, s, n);
                ref.name[n] = '\0';
                strcpy(ref.tag, colon + 1);
                if (!cairn_ref_name_valid(ref.name) || !cairn_ref_tag_valid(ref.tag))
                        return -EINVAL;
        }
        *ret_ref = ref;
        return 0;
}

int cairn_ref_format(const struct cairn_ref *ref, char *buf, size_t len)
{
        int n;
        if (ref->by_digest) {
                char d[CAIRN_DIGEST_STR_SIZE];
                cairn_digest_to_string(&ref->digest, d);
                n = snprintf(buf, len, "%s@%s", ref->name, d);
        } else {
                n = snprintf(buf, len, "%s:%s", ref->name, ref->tag);
        }
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cairn_ref_object_parse(const char *buf, size_t len, struct cairn_digest *ret_digest)
{
        if (len > 0 && buf[len - 1] == '\n')
                len--;
        if (len != 7 + CAIRN_DIGEST_HEX_LEN || memcmp(buf, "sha256:", 7) != 0)
                return -EINVAL;
        /* Lowercase only: one digest, one spelling. */
        for (size_t i = 7; i < len; i++)
                if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f')))
                        return -EINVAL;
        return cairn_digest_from_hex(buf + 7, CAIRN_DIGEST_HEX_LEN, ret_digest);
}
