/* SPDX-License-Identifier: Apache-2.0 */
/*
 * volume_context parsing and validation (see csi_context.h).  The values
 * are untrusted: each one is checked against what its consumer accepts,
 * and the checks are strict enough that a value can be placed in a
 * cairnfs -o list (no ',', no '\') or an INI file (no newline) verbatim.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/ref.h"
#include "cairn/parse.h"
#include "cairn/volume.h"
#include "csi_context.h"

#define K8S_PREFIX "csi.storage.k8s.io/"

/* Copies s into out for an error message: printable ASCII, at most 64 bytes. */
static const char *quote(const char *s, char *out, size_t outlen)
{
        size_t n = 0;

        for (; *s && n + 1 < outlen && n < 64; s++)
                out[n++] = (*s > 0x20 && *s < 0x7f) ? *s : '?';
        out[n] = '\0';
        return out;
}

static bool printable_no_space(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

/* "scheme://host[:port]" or with a path; no userinfo, query or fragment. */
static bool url_ok(const char *url, const char *scheme, bool host_required)
{
        size_t n = strlen(scheme);
        const char *host, *end;

        if (strncmp(url, scheme, n) != 0 || strncmp(url + n, "://", 3) != 0)
                return false;
        if (!printable_no_space(url) || strpbrk(url, "?#,\\\"'"))
                return false;
        host = url + n + 3;
        end = host + strcspn(host, "/");
        /* userinfo ("user:password@host") would be a secret in argv and mountinfo. */
        if (memchr(host, '@', (size_t)(end - host)))
                return false;
        return !host_required || end > host;
}

/* "/a/b": absolute, no empty, "." or ".." component, no trailing '/'. */
static bool clean_absolute_path(const char *p)
{
        if (p[0] != '/' || p[1] == '\0')
                return false;
        while (*p) {
                const char *start = ++p;
                size_t n;

                while (*p && *p != '/')
                        p++;
                n = (size_t)(p - start);
                if (n == 0 || (n == 1 && start[0] == '.') ||
                    (n == 2 && start[0] == '.' && start[1] == '.'))
                        return false;
        }
        return true;
}

/* file:///abs/path: cairnfs opens it as root, so it must be clean. */
static bool file_url_ok(const char *url)
{
        return url_ok(url, "file", false) && clean_absolute_path(url + strlen("file://"));
}

/*
 * A refused store URL for an error message, without what may be a secret:
 * userinfo ("user:password@") becomes "***@", a query or fragment "?***".
 */
static const char *quote_url(const char *url, char *out, size_t outlen)
{
        const char *host = strstr(url, "://"), *end, *at;
        char buf[CSI_CONTEXT_VALUE_MAX + 16];
        size_t n;

        host = host ? host + 3 : url;
        end = host + strcspn(host, "/?#");
        at = memchr(host, '@', (size_t)(end - host));
        if (at) {
                /* The last '@' of the authority ends the userinfo. */
                while (memchr(at + 1, '@', (size_t)(end - at - 1)))
                        at = memchr(at + 1, '@', (size_t)(end - at - 1));
                snprintf(buf, sizeof(buf), "%.*s***%s", (int)(host - url), url, at);
        } else {
                snprintf(buf, sizeof(buf), "%s", url);
        }
        n = strcspn(buf, "?#");
        if (buf[n])
                snprintf(buf + n, sizeof(buf) - n, "?***");
        return quote(buf, out, outlen);
}

static int check_store(const char *v, char *errbuf, size_t errlen)
{
        char q[80];
        bool ok;

        if (strncmp(v, "file:", 5) == 0)
                ok = file_url_ok(v);
        else if (strncmp(v, "https:", 6) == 0)
                ok = url_ok(v, "https", true);
        else if (strncmp(v, "http:", 5) == 0)
                ok = url_ok(v, "http", true);
        else if (strncmp(v, "s3:", 3) == 0)
                ok = url_ok(v, "s3", true);
        else
                ok = false;
        if (!ok) {
                snprintf(errbuf, errlen,
                         "volume_context: invalid store '%s' (expected file:///PATH, "
                         "http(s)://HOST/PATH or s3://BUCKET[/PREFIX], without credentials, "
                         "query or fragment)",
                         quote_url(v, q, sizeof(q)));
                return -EINVAL;
        }
        return 0;
}

static int check_ref(const char *v, char *errbuf, size_t errlen)
{
        struct cairn_ref ref;
        char q[80];

        if (cairn_ref_parse(v, &ref) < 0) {
                snprintf(errbuf, errlen,
                         "volume_context: invalid ref '%s' (expected NAME:TAG or "
                         "NAME@sha256:HEX)",
                         quote(v, q, sizeof(q)));
                return -EINVAL;
        }
        return 0;
}

/* The size syntax cairnfs takes: digits, an optional K/M/G, an optional "B"/"iB". */
#define CSI_MEMORY_LIMIT_MAX (64ull << 30)

static int check_size(const char *v, char *errbuf, size_t errlen)
{
        uint64_t size;
        char q[80];

        /*
         * The parser cairnfs itself uses, so what passes here cairnfs accepts;
         * a pod may not ask a node daemon for more than CSI_MEMORY_LIMIT_MAX.
         */
        if (cairn_parse_size(v, CSI_MEMORY_LIMIT_MAX, &size) == 0 &&
            size >= CAIRN_DAEMON_MEMORY_MIN)
                return 0;
        snprintf(errbuf, errlen,
                 "volume_context: invalid memory_limit '%s' (expected a size like 256M, at "
                 "least 64M, at most 64G)",
                 quote(v, q, sizeof(q)));
        return -EINVAL;
}

static int check_prefetch(const char *v, char *errbuf, size_t errlen)
{
        char q[80];

        if (!strcmp(v, "auto") || !strcmp(v, "all") || !strcmp(v, "none"))
                return 0;
        snprintf(errbuf, errlen,
                 "volume_context: invalid prefetch '%s' (expected auto, all or none)",
                 quote(v, q, sizeof(q)));
        return -EINVAL;
}

static int check_region(const char *v, char *errbuf, size_t errlen)
{
        size_t n = strlen(v);
        char q[80];

        if (n > 0 && n <= 64 && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789-") == n)
                return 0;
        snprintf(errbuf, errlen, "volume_context: invalid region '%s'", quote(v, q, sizeof(q)));
        return -EINVAL;
}

static int check_endpoint(const char *v, char *errbuf, size_t errlen)
{
        char q[80];

        if (url_ok(v, "https", true) || url_ok(v, "http", true))
                return 0;
        snprintf(errbuf, errlen,
                 "volume_context: invalid endpoint '%s' (expected http(s)://HOST[:PORT])",
                 quote_url(v, q, sizeof(q)));
        return -EINVAL;
}

/* The allowlist: every key we act on, with its check and where it is stored. */
static const struct {
        const char *key;
        int (*check)(const char *v, char *errbuf, size_t errlen);
        size_t offset;
} keys[] = {
    {"store", check_store, offsetof(struct csi_context, store)},
    {"ref", check_ref, offsetof(struct csi_context, ref)},
    {"memory_limit", check_size, offsetof(struct csi_context, memory_limit)},
    {"prefetch", check_prefetch, offsetof(struct csi_context, prefetch)},
    {"region", check_region, offsetof(struct csi_context, region)},
    {"endpoint", check_endpoint, offsetof(struct csi_context, endpoint)},
};

#define SLOT(ctx, off) ((char **)((char *)(ctx) + (off)))

bool csi_context_is_s3(const struct csi_context *ctx)
{
        return ctx->store && strncmp(ctx->store, "s3://", 5) == 0;
}

int csi_context_validate(const struct csi_context *ctx, char *errbuf, size_t errlen)
{
        int r;

        if (!ctx->store || !ctx->ref) {
                snprintf(errbuf, errlen, "volume_context: '%s' is required",
                         !ctx->store ? "store" : "ref");
                return -EINVAL;
        }
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                const char *v = *SLOT(ctx, keys[i].offset);

                if (!v)
                        continue;
                if (strlen(v) > CSI_CONTEXT_VALUE_MAX) {
                        snprintf(errbuf, errlen, "volume_context: '%s' is too long", keys[i].key);
                        return -EINVAL;
                }
                r = keys[i].check(v, errbuf, errlen);
                if (r < 0)
                        return r;
        }
        if ((ctx->region || ctx->endpoint) && !csi_context_is_s3(ctx)) {
                snprintf(errbuf, errlen, "volume_context: '%s' only applies to s3:// stores",
                         ctx->region ? "region" : "endpoint");
                return -EINVAL;
        }
        return 0;
}

void csi_context_release(struct csi_context *ctx)
{
        if (!ctx)
                return;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                free(*SLOT(ctx, keys[i].offset));
                *SLOT(ctx, keys[i].offset) = NULL;
        }
        ctx->ephemeral = false;
}

int csi_context_parse(const struct csi_kv *kv, size_t n, struct csi_context *ret_ctx, char *errbuf,
                      size_t errlen)
{
        struct csi_context ctx = {0};
        char q[80];
        int r;

        for (size_t i = 0; i < n; i++) {
                const char *key = kv[i].key, *value = kv[i].value;
                size_t k;

                if (strcmp(key, K8S_PREFIX "ephemeral") == 0) {
                        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
                                snprintf(errbuf, errlen,
                                         "volume_context: invalid " K8S_PREFIX
                                         "ephemeral '%s' (expected true or false)",
                                         quote(value, q, sizeof(q)));
                                r = -EINVAL;
                                goto fail;
                        }
                        ctx.ephemeral = strcmp(value, "true") == 0;
                        continue;
                }
                /* Pod information that kubelet adds (podInfoOnMount): not ours to check. */
                if (strncmp(key, K8S_PREFIX, strlen(K8S_PREFIX)) == 0)
                        continue;
                for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                        if (strcmp(key, keys[k].key) == 0)
                                break;
                if (k == sizeof(keys) / sizeof(keys[0])) {
                        snprintf(errbuf, errlen,
                                 "volume_context: unknown key '%s' (expected store, ref, "
                                 "memory_limit, prefetch, region, endpoint)",
                                 quote(key, q, sizeof(q)));
                        r = -EINVAL;
                        goto fail;
                }
                if (*SLOT(&ctx, keys[k].offset)) {
                        snprintf(errbuf, errlen, "volume_context: duplicate key '%s'", keys[k].key);
                        r = -EINVAL;
                        goto fail;
                }
                *SLOT(&ctx, keys[k].offset) = strdup(value);
                if (!*SLOT(&ctx, keys[k].offset)) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        r = csi_context_validate(&ctx, errbuf, errlen);
        if (r < 0)
                goto fail;
        *ret_ctx = ctx;
        return 0;
fail:
        csi_context_release(&ctx);
        return r;
}

static bool str_equal(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool csi_context_equal(const struct csi_context *a, const struct csi_context *b)
{
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                if (!str_equal(*SLOT(a, keys[i].offset), *SLOT(b, keys[i].offset)))
                        return false;
        return true;
}

int csi_context_source(const struct csi_context *ctx, char **ret_source)
{
        char *s;

        if (asprintf(&s, "%s#%s", ctx->store, ctx->ref) < 0)
                return -ENOMEM;
        *ret_source = s;
        return 0;
}

int csi_context_mount_options(const struct csi_context *ctx, const char *cache_dir,
                              char **ret_options)
{
        char *s;
        int n;

        /* allow_other: pods do not run as the root that mounts. */
        n = asprintf(&s, "allow_other,cache_dir=%s%s%s%s%s", cache_dir,
                     ctx->memory_limit ? ",memory_limit=" : "",
                     ctx->memory_limit ? ctx->memory_limit : "", ctx->prefetch ? ",prefetch=" : "",
                     ctx->prefetch ? ctx->prefetch : "");
        if (n < 0)
                return -ENOMEM;
        *ret_options = s;
        return 0;
}
