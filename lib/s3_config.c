/* SPDX-License-Identifier: Apache-2.0 */
/*
 * S3 configuration, resolved the way the AWS CLI and SDKs do it, so that a
 * machine already set up for `aws s3` works with cairn unchanged:
 * environment variables, then the named profile of the shared config and
 * credentials files, then defaults.  An explicit option (a CLI flag) beats
 * everything; in particular an explicit profile is used even when
 * credentials are also in the environment, as `aws --profile` does.
 *
 * The shared files are INI as botocore reads them (Python's configparser):
 * "#" and ";" comment lines, "key = value" or "key: value", keys are case
 * insensitive, values are taken verbatim (no inline comments, no quotes),
 * and an indented block under an empty key ("s3 =" then "  addressing_style
 * = path") is a nested setting, reported as "s3.addressing_style".
 *
 * Secrets are copied only into the config struct and the file buffers,
 * which are wiped with OPENSSL_cleanse; no message built here ever quotes
 * a value, only the name of the variable or file it came from.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cairn/s3.h"

#define INI_MAX_SIZE (1u << 20)
/* Longer keys are not AWS settings; they are skipped, not refused. */
#define INI_KEY_MAX 128
#define PROFILE_NAME_MAX 128

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
        if (!errbuf || !errlen)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Trims blanks on both ends of [*start, *end). */
static void trim(const char **start, const char **end)
{
        while (*start < *end && is_blank(**start))
                (*start)++;
        while (*end > *start && is_blank((*end)[-1]))
                (*end)--;
}

static bool span_is(const char *p, size_t len, const char *s)
{
        return strlen(s) == len && memcmp(p, s, len) == 0;
}

/* Does the section header text [p, p+len) (trimmed) name `profile`? */
static bool section_matches(const char *p, size_t len, const char *profile, bool config_file)
{
        if (!config_file)
                return span_is(p, len, profile);
        /* Config file: "[default]" or "[profile NAME]" (the CLI also takes "[profile default]"). */
        if (span_is(p, len, "default"))
                return strcmp(profile, "default") == 0;
        if (len > 8 && memcmp(p, "profile", 7) == 0 && is_blank(p[7])) {
                const char *q = p + 8, *end = p + len;
                while (q < end && is_blank(*q))
                        q++;
                return span_is(q, (size_t)(end - q), profile);
        }
        return false;
}

int cairn_s3_ini_parse(const char *text, size_t len, const char *profile, bool config_file,
                       void (*found)(const char *key, const char *value, void *ctx), void *ctx)
{
        char *copy = NULL;
        bool in_profile = false, any_section = false, matched = false;
        /* The key of the last "name =" with an empty value: the parent of indented lines. */
        char parent[INI_KEY_MAX + 1] = "";
        int r = 0;

        if (!text || !profile || !found)
                return -EINVAL;
        if (len > INI_MAX_SIZE)
                return -EFBIG;
        if (memchr(text, '\0', len))
                return -EINVAL;
        /* A private copy to NUL-terminate keys and values in; it holds secrets, so it is wiped. */
        copy = malloc(len + 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, text, len);
        copy[len] = '\0';

        char *line = copy, *end_all = copy + len;
        /* Like configparser: a line indented deeper than the option before it continues it. */
        bool have_option = false;
        size_t option_indent = 0;
        while (line < end_all) {
                char *nl = memchr(line, '\n', (size_t)(end_all - line));
                char *line_end = nl ? nl : end_all;
                char *next = nl ? nl + 1 : end_all;
                const char *s = line, *e = line_end;

                trim(&s, &e);
                size_t indent = (size_t)(s - line);
                line = next;
                if (s == e || *s == '#' || *s == ';')
                        continue;
                bool continuation = have_option && indent > option_indent;
                if (*s == '[' && !continuation) {
                        /* "[name]", optionally followed by a comment. */
                        const char *close = memchr(s, ']', (size_t)(e - s));
                        if (!close) {
                                r = -EINVAL;
                                goto out;
                        }
                        const char *after = close + 1;
                        while (after < e && is_blank(*after))
                                after++;
                        if (after < e && *after != '#' && *after != ';') {
                                r = -EINVAL;
                                goto out;
                        }
                        const char *ns = s + 1, *ne = close;
                        trim(&ns, &ne);
                        if (ns == ne) {
                                r = -EINVAL;
                                goto out;
                        }
                        in_profile = section_matches(ns, (size_t)(ne - ns), profile, config_file);
                        matched |= in_profile;
                        any_section = true;
                        have_option = false;
                        parent[0] = '\0';
                        continue;
                }
                if (!any_section) {
                        r = -EINVAL; /* a setting before any section header */
                        goto out;
                }
                if (continuation && !parent[0])
                        continue; /* a multi-line value: no AWS setting we read has one */
                const char *eq = s;
                while (eq < e && *eq != '=' && *eq != ':')
                        eq++;
                if (eq == e) {
                        r = -EINVAL;
                        goto out;
                }
                const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
                trim(&ks, &ke);
                trim(&vs, &ve);
                if (ks == ke) {
                        r = -EINVAL;
                        goto out;
                }
                size_t klen = (size_t)(ke - ks);
                char key[2 * INI_KEY_MAX + 2];
                if (!continuation) {
                        have_option = true;
                        option_indent = indent;
                        parent[0] = '\0';
                }
                if (klen > INI_KEY_MAX)
                        continue;
                if (continuation) {
                        snprintf(key, sizeof(key), "%s.%.*s", parent, (int)klen, ks);
                } else {
                        memcpy(key, ks, klen);
                        key[klen] = '\0';
                        /* "name =" with nothing after it opens a nested block. */
                        if (vs == ve)
                                memcpy(parent, key, klen + 1);
                }
                for (char *k = key; *k; k++)
                        if (*k >= 'A' && *k <= 'Z')
                                *k = (char)(*k - 'A' + 'a');
                for (char *k = parent; *k; k++)
                        if (*k >= 'A' && *k <= 'Z')
                                *k = (char)(*k - 'A' + 'a');
                if (in_profile && vs != ve) {
                        char *value = (char *)vs;
                        value[ve - vs] = '\0';
                        found(key, value, ctx);
                }
        }
        r = matched ? 1 : 0;
out:
        OPENSSL_cleanse(copy, len + 1);
        free(copy);
        return r;
}

/* What one profile says, merged over the config and credentials files. */
struct profile_values {
        char *access_key;
        char *secret_key;
        char *session_token;
        char *region;
        char *endpoint_url;
        char *s3_endpoint_url;
        char *addressing_style;
        /* A credential source we do not implement (role_arn, credential_process, sso_*). */
        char unsupported[48];
        int error; /* -ENOMEM from the callback */
};

static void free_secret(char **p)
{
        if (*p) {
                OPENSSL_cleanse(*p, strlen(*p));
                free(*p);
                *p = NULL;
        }
}

static void profile_values_release(struct profile_values *v)
{
        free_secret(&v->access_key);
        free_secret(&v->secret_key);
        free_secret(&v->session_token);
        free(v->region);
        free(v->endpoint_url);
        free(v->s3_endpoint_url);
        free(v->addressing_style);
        *v = (struct profile_values){0};
}

static void profile_found(const char *key, const char *value, void *ctx)
{
        struct profile_values *v = ctx;
        char **slot = NULL;
        bool secret = false;

        if (strcmp(key, "aws_access_key_id") == 0) {
                slot = &v->access_key;
                secret = true;
        } else if (strcmp(key, "aws_secret_access_key") == 0) {
                slot = &v->secret_key;
                secret = true;
        } else if (strcmp(key, "aws_session_token") == 0) {
                slot = &v->session_token;
                secret = true;
        } else if (strcmp(key, "region") == 0) {
                slot = &v->region;
        } else if (strcmp(key, "endpoint_url") == 0) {
                slot = &v->endpoint_url;
        } else if (strcmp(key, "s3.endpoint_url") == 0) {
                slot = &v->s3_endpoint_url;
        } else if (strcmp(key, "s3.addressing_style") == 0) {
                slot = &v->addressing_style;
        } else if (strcmp(key, "role_arn") == 0 || strcmp(key, "credential_process") == 0 ||
                   strcmp(key, "web_identity_token_file") == 0 ||
                   strncmp(key, "sso_", 4) == 0) {
                if (!v->unsupported[0])
                        snprintf(v->unsupported, sizeof(v->unsupported), "%s", key);
                return;
        } else {
                return;
        }
        char *copy = strdup(value);
        if (!copy) {
                v->error = -ENOMEM;
                return;
        }
        /* The last occurrence wins, as in later files and later lines. */
        if (secret)
                free_secret(slot);
        else
                free(*slot);
        *slot = copy;
}

/* The value of an environment variable, NULL when unset or empty (as the SDKs treat it). */
static const char *env(const char *name)
{
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

/* "~/x" under $HOME (or the passwd entry); other paths as they are. */
static char *expand_home(const char *path)
{
        if (path[0] != '~' || (path[1] != '/' && path[1] != '\0'))
                return strdup(path);
        const char *home = env("HOME");
        if (!home) {
                struct passwd *pw = getpwuid(getuid());
                home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
                return NULL;
        char *out;
        if (asprintf(&out, "%s%s", home, path + 1) < 0)
                return NULL;
        return out;
}

/*
 * Reads a shared file into a heap buffer (wiped by the caller).  A missing
 * file is not an error: *ret_text stays NULL.
 */
static int read_shared_file(const char *path, char **ret_text, size_t *ret_len, char *errbuf,
                            size_t errlen)
{
        char *buf = NULL;
        struct stat st;
        size_t got = 0;
        int r;

        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                r = -errno;
                set_err(errbuf, errlen, "cannot open '%s': %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                set_err(errbuf, errlen, "cannot stat '%s': %s", path, strerror(-r));
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                set_err(errbuf, errlen, "'%s' is not a regular file", path);
                goto out;
        }
        if (st.st_size > INI_MAX_SIZE) {
                r = -EFBIG;
                set_err(errbuf, errlen, "'%s' is larger than 1 MiB", path);
                goto out;
        }
        /* One byte more than allowed, to notice a file that grew since fstat. */
        buf = malloc(INI_MAX_SIZE + 1);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        for (;;) {
                ssize_t n = read(fd, buf + got, INI_MAX_SIZE + 1 - got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        set_err(errbuf, errlen, "cannot read '%s': %s", path, strerror(-r));
                        goto out;
                }
                if (n == 0)
                        break;
                got += (size_t)n;
                if (got > INI_MAX_SIZE) {
                        r = -EFBIG;
                        set_err(errbuf, errlen, "'%s' is larger than 1 MiB", path);
                        goto out;
                }
        }
        *ret_text = buf;
        *ret_len = got;
        buf = NULL;
        r = 0;
out:
        if (buf) {
                OPENSSL_cleanse(buf, got);
                free(buf);
        }
        close(fd);
        return r;
}

/* Parses one shared file (if it exists) for the profile into v; 1 if the profile is in it. */
static int load_shared_file(const char *env_name, const char *default_path, bool config_file,
                            const char *profile, struct profile_values *v, char *errbuf,
                            size_t errlen)
{
        const char *given = env(env_name);
        char *path = expand_home(given ? given : default_path);
        char *text = NULL;
        size_t len = 0;
        int r;

        if (!path)
                return given ? -ENOMEM : 0; /* no home directory: no default file */
        r = read_shared_file(path, &text, &len, errbuf, errlen);
        if (r < 0 || !text)
                goto out;
        r = cairn_s3_ini_parse(text, len, profile, config_file, profile_found, v);
        if (r == -EINVAL)
                set_err(errbuf, errlen, "malformed AWS %s file '%s'",
                        config_file ? "config" : "credentials", path);
        else if (r >= 0 && v->error < 0)
                r = v->error;
out:
        if (text) {
                OPENSSL_cleanse(text, len);
                free(text);
        }
        free(path);
        return r;
}

/* Credentials go into HTTP headers: printable ASCII without spaces only. */
static bool credential_valid(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

/* Region names go into host names and the credential scope. */
bool cairn_s3_region_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
                        return false;
        return true;
}

/*
 * Validates "http[s]://host[:port][/]" and returns it without the slash.
 * No user info (it would be a credential in a URL), no path, no query.
 */
static int endpoint_normalize(const char *url, char **ret)
{
        size_t scheme;
        if (strncmp(url, "http://", 7) == 0)
                scheme = 7;
        else if (strncmp(url, "https://", 8) == 0)
                scheme = 8;
        else
                return -EINVAL;
        size_t len = strlen(url);
        if (len > scheme && url[len - 1] == '/')
                len--;
        const char *host = url + scheme, *end = url + len, *p = host;
        if (len > 512)
                return -EINVAL;
        if (p < end && *p == '[') {
                /* An IPv6 literal. */
                p++;
                while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                                   (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.'))
                        p++;
                if (p == host + 1 || p >= end || *p != ']')
                        return -EINVAL;
                p++;
        } else {
                while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                   (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
                        p++;
                if (p == host)
                        return -EINVAL;
        }
        if (p < end) {
                unsigned port = 0;
                if (*p++ != ':' || p == end || end - p > 5)
                        return -EINVAL;
                for (; p < end; p++) {
                        if (*p < '0' || *p > '9')
                                return -EINVAL;
                        port = port * 10 + (unsigned)(*p - '0');
                }
                if (port < 1 || port > 65535)
                        return -EINVAL;
        }
        char *out = strndup(url, len);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}

/* The host part of a normalized endpoint, without port. */
static bool endpoint_is_aws(const char *endpoint)
{
        const char *host = strstr(endpoint, "://") + 3;
        size_t n = strcspn(host, ":/");
        static const char *const suffixes[] = {".amazonaws.com", ".amazonaws.com.cn"};
        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
                size_t sl = strlen(suffixes[i]);
                if (n > sl && memcmp(host + n - sl, suffixes[i], sl) == 0)
                        return true;
        }
        return false;
}

static int dup_secret(const char *s, char **ret)
{
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

int cairn_s3_config_load(const struct cairn_store_options *opts, struct cairn_s3_config *ret_config,
                         char *errbuf, size_t errlen)
{
        static const struct cairn_store_options defaults;
        struct cairn_s3_config c = {0};
        struct profile_values pv = {0};
        const char *profile, *profile_source;
        bool profile_explicit = true, profile_found_any = false;
        int r;

        if (!opts)
                opts = &defaults;
        if (errbuf && errlen)
                errbuf[0] = '\0';

        if (opts->profile && *opts->profile) {
                profile = opts->profile;
                profile_source = "profile";
        } else if (env("AWS_PROFILE")) {
                profile = env("AWS_PROFILE");
                profile_source = "AWS_PROFILE: profile";
        } else {
                profile = "default";
                profile_source = "profile";
                profile_explicit = false;
        }
        if (strlen(profile) > PROFILE_NAME_MAX || strpbrk(profile, "[]\n\r")) {
                set_err(errbuf, errlen, "invalid AWS profile name");
                r = -EINVAL;
                goto out;
        }

        /* Config first, then credentials: credentials-file values win, as in botocore. */
        r = load_shared_file("AWS_CONFIG_FILE", "~/.aws/config", true, profile, &pv, errbuf,
                             errlen);
        if (r < 0)
                goto out;
        profile_found_any |= r > 0;
        r = load_shared_file("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", false, profile,
                             &pv, errbuf, errlen);
        if (r < 0)
                goto out;
        profile_found_any |= r > 0;
        if (profile_explicit && !profile_found_any) {
                set_err(errbuf, errlen, "%s '%s' not found in the AWS config or credentials file",
                        profile_source, profile);
                r = -ENOENT;
                goto out;
        }

        /* Region. */
        const char *region = opts->region && *opts->region ? opts->region : NULL;
        const char *region_source = "--region";
        if (!region && (region = env("AWS_REGION")))
                region_source = "AWS_REGION";
        if (!region && (region = env("AWS_DEFAULT_REGION")))
                region_source = "AWS_DEFAULT_REGION";
        if (!region && (region = pv.region))
                region_source = "the profile's region";
        if (!region)
                region = "us-east-1";
        if (!cairn_s3_region_valid(region)) {
                set_err(errbuf, errlen, "invalid region '%.64s' (from %s)", region, region_source);
                r = -EINVAL;
                goto out;
        }
        c.region = strdup(region);
        if (!c.region) {
                r = -ENOMEM;
                goto out;
        }

        /* Endpoint. */
        const char *endpoint = opts->endpoint && *opts->endpoint ? opts->endpoint : NULL;
        const char *endpoint_source = "--endpoint";
        if (!endpoint && (endpoint = env("AWS_ENDPOINT_URL_S3")))
                endpoint_source = "AWS_ENDPOINT_URL_S3";
        if (!endpoint && (endpoint = env("AWS_ENDPOINT_URL")))
                endpoint_source = "AWS_ENDPOINT_URL";
        if (!endpoint && (endpoint = pv.s3_endpoint_url))
                endpoint_source = "the profile's s3 endpoint_url";
        if (!endpoint && (endpoint = pv.endpoint_url))
                endpoint_source = "the profile's endpoint_url";
        if (endpoint) {
                r = endpoint_normalize(endpoint, &c.endpoint);
                if (r == -EINVAL)
                        set_err(errbuf, errlen,
                                "invalid S3 endpoint from %s: need http[s]://HOST[:PORT]",
                                endpoint_source);
        } else {
                r = asprintf(&c.endpoint, "https://s3.%s.amazonaws.com", c.region) < 0 ? -ENOMEM
                                                                                         : 0;
        }
        if (r < 0)
                goto out;

        /* Addressing. */
        switch (opts->addressing) {
        case CAIRN_S3_ADDRESSING_PATH:
                c.path_style = true;
                break;
        case CAIRN_S3_ADDRESSING_VIRTUAL:
                c.path_style = false;
                break;
        default:
                if (pv.addressing_style && strcmp(pv.addressing_style, "path") == 0) {
                        c.path_style = true;
                } else if (pv.addressing_style && strcmp(pv.addressing_style, "virtual") == 0) {
                        c.path_style = false;
                } else if (pv.addressing_style && strcmp(pv.addressing_style, "auto") != 0) {
                        set_err(errbuf, errlen,
                                "invalid s3 addressing_style '%.32s' in profile '%s' "
                                "(path, virtual or auto)",
                                pv.addressing_style, profile);
                        r = -EINVAL;
                        goto out;
                } else {
                        c.path_style = !endpoint_is_aws(c.endpoint);
                }
                break;
        }

        /* Credentials: an explicit profile, the environment, the (default) profile, none. */
        if (!opts->anonymous) {
                const char *ak = NULL, *sk = NULL, *st = NULL, *source = NULL;
                bool from_env = !(opts->profile && *opts->profile) &&
                                (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY"));
                if (from_env) {
                        ak = env("AWS_ACCESS_KEY_ID");
                        sk = env("AWS_SECRET_ACCESS_KEY");
                        st = env("AWS_SESSION_TOKEN");
                        source = "the environment";
                        if (!ak || !sk) {
                                set_err(errbuf, errlen, "%s is set but %s is not",
                                        ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                                        ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
                                r = -EINVAL;
                                goto out;
                        }
                } else if (pv.access_key || pv.secret_key) {
                        ak = pv.access_key;
                        sk = pv.secret_key;
                        st = pv.session_token;
                        source = "the profile";
                        if (!ak || !sk) {
                                set_err(errbuf, errlen, "profile '%s' has %s but no %s", profile,
                                        ak ? "aws_access_key_id" : "aws_secret_access_key",
                                        ak ? "aws_secret_access_key" : "aws_access_key_id");
                                r = -EINVAL;
                                goto out;
                        }
                } else if (pv.unsupported[0]) {
                        set_err(errbuf, errlen,
                                "profile '%s' gets credentials through '%s', which cairn does not "
                                "support: use static keys or the environment",
                                profile, pv.unsupported);
                        r = -EOPNOTSUPP;
                        goto out;
                }
                if (ak) {
                        if (!credential_valid(ak) || !credential_valid(sk) ||
                            (st && !credential_valid(st))) {
                                set_err(errbuf, errlen,
                                        "invalid characters in the credentials from %s", source);
                                r = -EINVAL;
                                goto out;
                        }
                        r = dup_secret(ak, &c.access_key);
                        if (r >= 0)
                                r = dup_secret(sk, &c.secret_key);
                        if (r >= 0 && st)
                                r = dup_secret(st, &c.session_token);
                        if (r < 0)
                                goto out;
                }
        }

        *ret_config = c;
        c = (struct cairn_s3_config){0};
        r = 0;
out:
        cairn_s3_config_release(&c);
        profile_values_release(&pv);
        return r;
}

void cairn_s3_config_release(struct cairn_s3_config *config)
{
        if (!config)
                return;
        free(config->endpoint);
        free(config->region);
        free_secret(&config->access_key);
        free_secret(&config->secret_key);
        free_secret(&config->session_token);
        *config = (struct cairn_s3_config){0};
}
