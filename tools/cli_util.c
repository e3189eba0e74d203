/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the `cairn` commands: one error format, strict number
 * and size parsing, and opening stores and volumes with messages that name
 * what failed.  Library calls return -errno and log nothing above debug, so
 * this is where a failure gets its one line for the user.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/ref.h"
#include "cairn/s3.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#include "cairn/parse.h"

#include "cli_util.h"

static const char *cli_command_name;

void cli_set_command(const char *name)
{
        cli_command_name = name;
}

static __attribute__((format(printf, 1, 0))) void cli_verror(const char *fmt, va_list ap)
{
        /* Build the line first so that concurrent writers cannot interleave inside it. */
        char msg[4096];
        int n;

        if (cli_command_name)
                n = snprintf(msg, sizeof(msg), "cairn: %s: ", cli_command_name);
        else
                n = snprintf(msg, sizeof(msg), "cairn: ");
        if (n < 0 || (size_t)n >= sizeof(msg))
                n = 0;
        vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
        fprintf(stderr, "%s\n", msg);
}

void cli_error(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        cli_verror(fmt, ap);
        va_end(ap);
}

int cli_usage_error(const char *fmt, ...)
{
        char msg[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (cli_command_name)
                cli_error("%s (see 'cairn %s --help')", msg, cli_command_name);
        else
                cli_error("%s (see 'cairn --help')", msg);
        return CLI_EXIT_USAGE;
}

int cli_getopt_error(int c, char **argv)
{
        /*
         * getopt_long() has already advanced optind past a long option it
         * rejected; for a bad short option inside a cluster it may not
         * have, so the short case uses optopt instead.
         */
        const char *arg = optind > 0 ? argv[optind - 1] : "";

        if (c == ':')
                return cli_usage_error("option '%s' needs a value", arg);
        if (optopt > 0 && optopt < 128 && isprint(optopt) && strncmp(arg, "--", 2) != 0)
                return cli_usage_error("invalid option '-%c'", optopt);
        return cli_usage_error("invalid option '%s'", arg);
}

int cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
        return cairn_parse_uint(s, min, max, ret_value);
}

int cli_parse_size(const char *s, uint64_t max, uint64_t *ret_size)
{
        return cairn_parse_size(s, max, ret_size);
}

int cli_parse_ref(const char *s, struct cairn_ref *ret_ref)
{
        int r;

        r = cairn_ref_parse(s, ret_ref);
        if (r < 0)
                cli_error("invalid reference '%s': expected NAME:TAG or NAME@sha256:<64 hex>", s);
        return r;
}

void cli_store_args_init(struct cli_store_args *args)
{
        *args = (struct cli_store_args){.opts = {.addressing = CAIRN_S3_ADDRESSING_AUTO}};
}

/* "http[s]://HOST[:PORT][/]": no path, no query, and no user info (a secret in argv). */
static bool endpoint_valid(const char *s)
{
        size_t scheme;

        if (strncmp(s, "http://", 7) == 0)
                scheme = 7;
        else if (strncmp(s, "https://", 8) == 0)
                scheme = 8;
        else
                return false;
        s += scheme;
        if (*s == '\0' || *s == '/' || *s == ':' || strlen(s) > 512)
                return false;
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if (ch <= ' ' || ch >= 0x7f || ch == '@' || ch == '?' || ch == '#' ||
                    (ch == '/' && s[1] != '\0'))
                        return false;
        }
        return true;
}

/* A profile is a section name of the AWS shared files: printable, no brackets. */
static bool profile_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 128)
                return false;
        for (; *s; s++)
                if (!isprint((unsigned char)*s) || *s == '[' || *s == ']')
                        return false;
        return true;
}

int cli_store_parse_option(struct cli_store_args *args, int c, const char *arg)
{
        struct cairn_store_options *o = &args->opts;
        uint64_t v;

        switch (c) {
        case CLI_OPT_ENDPOINT:
                /* Not echoed: the part before '@' would be a secret, and stderr gets logged. */
                if (strchr(arg, '@')) {
                        cli_usage_error("invalid --endpoint: credentials do not belong in the "
                                        "URL (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
                        return -EINVAL;
                }
                if (!endpoint_valid(arg)) {
                        cli_usage_error("invalid --endpoint '%s': expected http[s]://HOST[:PORT] "
                                        "(credentials come from the environment, never the URL)",
                                        arg);
                        return -EINVAL;
                }
                o->endpoint = arg;
                args->s3_flag = "--endpoint";
                return 1;
        case CLI_OPT_REGION:
                if (!cairn_s3_region_valid(arg)) {
                        cli_usage_error("invalid --region '%s': expected a name like us-east-1",
                                        arg);
                        return -EINVAL;
                }
                o->region = arg;
                args->s3_flag = "--region";
                return 1;
        case CLI_OPT_PROFILE:
                if (!profile_valid(arg)) {
                        cli_usage_error("invalid --aws-profile '%s': expected a profile of "
                                        "the AWS config files",
                                        arg);
                        return -EINVAL;
                }
                o->profile = arg;
                args->s3_flag = "--aws-profile";
                return 1;
        case CLI_OPT_PATH_STYLE:
        case CLI_OPT_VIRTUAL_HOSTED: {
                enum cairn_s3_addressing want = c == CLI_OPT_PATH_STYLE
                                                    ? CAIRN_S3_ADDRESSING_PATH
                                                    : CAIRN_S3_ADDRESSING_VIRTUAL;

                if (o->addressing != CAIRN_S3_ADDRESSING_AUTO && o->addressing != want) {
                        cli_usage_error("--path-style and --virtual-hosted exclude each other");
                        return -EINVAL;
                }
                o->addressing = want;
                args->s3_flag = c == CLI_OPT_PATH_STYLE ? "--path-style" : "--virtual-hosted";
                return 1;
        }
        case CLI_OPT_ANONYMOUS:
                o->anonymous = true;
                args->s3_flag = "--anonymous";
                return 1;
        case CLI_OPT_CA_FILE:
                /* Checked now: curl would only say so at the first connection, less clearly. */
                if (arg[0] == '\0' || access(arg, R_OK) < 0) {
                        cli_usage_error("cannot read --ca-file '%s': %s", arg,
                                        arg[0] ? strerror(errno) : "empty path");
                        return -EINVAL;
                }
                o->ca_file = arg;
                args->remote_flag = "--ca-file";
                return 1;
        case CLI_OPT_INSECURE:
                o->insecure = true;
                args->remote_flag = "--insecure";
                return 1;
        case CLI_OPT_CONNECTIONS:
                if (cli_parse_uint(arg, 1, CLI_CONNECTIONS_MAX, &v) < 0) {
                        cli_usage_error("invalid --connections '%s': expected 1..%u", arg,
                                        CLI_CONNECTIONS_MAX);
                        return -EINVAL;
                }
                o->max_connections = (unsigned)v;
                args->remote_flag = "--connections";
                return 1;
        case CLI_OPT_DEADLINE:
                if (cli_parse_uint(arg, 1, CLI_DEADLINE_MAX_S, &v) < 0) {
                        cli_usage_error("invalid --deadline '%s': expected whole seconds, 1..%u",
                                        arg, CLI_DEADLINE_MAX_S);
                        return -EINVAL;
                }
                o->deadline_ms = (unsigned)v * 1000u;
                return 1;
        default:
                return 0;
        }
}

void cli_store_help(FILE *out)
{
        fputs("Store options (http://, https:// and s3:// stores):\n"
              "      --endpoint URL      S3 endpoint, http[s]://HOST[:PORT] (default:\n"
              "                          AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile,\n"
              "                          else AWS)\n"
              "      --region REGION     S3 region (default: AWS_REGION, AWS_DEFAULT_REGION,\n"
              "                          the profile, else us-east-1)\n"
              "      --aws-profile NAME  Profile of the AWS config and credentials files\n"
              "                          (default: AWS_PROFILE, else \"default\")\n"
              "      --path-style        S3 path-style URLs (default for custom endpoints)\n"
              "      --virtual-hosted    S3 virtual-hosted URLs (default for AWS)\n"
              "      --anonymous         Never sign S3 requests, even with credentials set\n"
              "      --ca-file PATH      Trust the CA certificates in PATH for https\n"
              "      --insecure          Do not verify TLS certificates (warns; testing only)\n"
              "      --connections N     Parallel connections per host, 1..256 (default 8)\n"
              "      --deadline SECONDS  A read that takes longer fails (default 30)\n"
              "\n"
              "S3 credentials are never options: they come from the --aws-profile given,\n"
              "else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN,\n"
              "else the profile AWS_PROFILE (or \"default\") in ~/.aws/credentials and\n"
              "~/.aws/config; without any, requests are unsigned.\n",
              out);
}

static bool url_is_s3(const char *url)
{
        return strncmp(url, "s3://", 5) == 0;
}

static bool url_is_remote(const char *url)
{
        return url_is_s3(url) || strncmp(url, "http://", 7) == 0 ||
               strncmp(url, "https://", 8) == 0;
}

int cli_store_check(const char *url, const struct cli_store_args *args)
{
        if (!args)
                return 0;
        if (args->s3_flag && !url_is_s3(url)) {
                cli_usage_error("%s applies to s3:// stores only, not to '%s'", args->s3_flag, url);
                return -EINVAL;
        }
        if (args->remote_flag && !url_is_remote(url)) {
                cli_usage_error("%s applies to http://, https:// and s3:// stores only, not to "
                                "'%s'",
                                args->remote_flag, url);
                return -EINVAL;
        }
        return 0;
}

/*
 * The URL as it may be shown: user information ("user:password@") is
 * replaced by "***@", so that a secret typed into a URL never reaches a
 * message.
 */
static const char *redact_url(const char *url, char *buf, size_t len)
{
        const char *host = strstr(url, "://");
        if (!host)
                return url;
        host += 3;
        const char *at = strchr(host, '@'), *slash = strchr(host, '/');
        if (!at || (slash && slash < at))
                return url;
        snprintf(buf, len, "%.*s***%s", (int)(host - url), url, at);
        return buf;
}

int cli_store_option_or_fail(struct cli_store_args *args, int c, const char *arg, char **argv)
{
        int r = cli_store_parse_option(args, c, arg);
        if (r < 0)
                return CLI_EXIT_USAGE;
        return r == 0 ? cli_getopt_error(c, argv) : 0;
}

int cli_open_store(const char *url, const struct cli_store_args *args, bool create,
                   struct cairn_store **ret_store)
{
        struct cairn_store_options opts = {0};
        char errbuf[512] = "";
        int r;

        if (args)
                opts = args->opts;
        opts.create = create;
        if (opts.insecure)
                cli_error("warning: TLS verification disabled (--insecure): the server's "
                          "certificate is not checked");
        r = cairn_store_open_with(url, &opts, ret_store, errbuf, sizeof(errbuf));
        if (r >= 0)
                return r;
        /* The store's reason may already name the store; don't say it twice. */
        if (strncmp(errbuf, "cannot open store", 17) == 0) {
                cli_error("%s", errbuf);
        } else {
                char shown[1024];
                cli_error("cannot open store '%s': %s", redact_url(url, shown, sizeof(shown)),
                          errbuf[0] ? errbuf : strerror(-r));
        }
        return r;
}

int cli_open_volume(struct cairn_store *store, const struct cairn_ref *ref,
                    const struct cli_store_args *args, struct cairn_volume **ret_volume)
{
        struct cairn_volume_options opts = {.cache_dir = NULL};
        char name[CAIRN_REF_NAME_MAX + CAIRN_DIGEST_STR_SIZE + 8];
        char errbuf[512] = "";
        int r;

        if (args)
                opts.deadline_ms = args->opts.deadline_ms;
        r = cairn_volume_open(store, ref, &opts, ret_volume, errbuf, sizeof(errbuf));
        if (r < 0) {
                if (cairn_ref_format(ref, name, sizeof(name)) < 0)
                        snprintf(name, sizeof(name), "%s", ref->name);
                cli_error("cannot open '%s' in '%s': %s", name, cairn_store_url(store),
                          errbuf[0] ? errbuf : strerror(-r));
        }
        return r;
}

void cli_format_size(uint64_t bytes, char *buf, size_t len)
{
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        unsigned u = 0;
        double v = (double)bytes;

        if (bytes < 1024) {
                snprintf(buf, len, "%llu B", (unsigned long long)bytes);
                return;
        }
        while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024.0;
                u++;
        }
        /* 1023.96 KiB would print as "1024.0 KiB"; say "1.0 MiB" instead. */
        if (v >= 1023.95 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024.0;
                u++;
        }
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

const char *cli_format_size_exact(uint64_t bytes, char *buf, size_t len)
{
        char human[32];

        cli_format_size(bytes, human, sizeof(human));
        if (bytes < 1024)
                snprintf(buf, len, "%s", human);
        else
                snprintf(buf, len, "%s (%llu bytes)", human, (unsigned long long)bytes);
        return buf;
}

int cli_escape(const char *s, char **ret_escaped)
{
        size_t n = strlen(s);
        char *out, *p;

        /* Worst case every byte becomes \xNN. */
        if (n > (SIZE_MAX - 1) / 4)
                return -ENOMEM;
        out = malloc(n * 4 + 1);
        if (!out)
                return -ENOMEM;
        p = out;
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if (ch == '\\') {
                        *p++ = '\\';
                        *p++ = '\\';
                } else if (ch < 0x20 || ch == 0x7f) {
                        p += sprintf(p, "\\x%02x", ch);
                } else {
                        *p++ = (char)ch;
                }
        }
        *p = '\0';
        *ret_escaped = out;
        return 0;
}

void cli_json_string(const char *s)
{
        putchar('"');
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20 || ch == 0x7f)
                        printf("\\u%04x", ch);
                else
                        putchar(ch);
        }
        putchar('"');
}

unsigned cli_cpu_count(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        if (n < 1)
                return 1;
        if (n > 1024)
                return 1024;
        return (unsigned)n;
}

int cli_absolute_path(const char *path, char **ret_path)
{
        char *cwd, *abs;
        int r = 0;

        if (path[0] == '/') {
                abs = strdup(path);
                if (!abs)
                        return -ENOMEM;
                *ret_path = abs;
                return 0;
        }
        cwd = getcwd(NULL, 0);
        if (!cwd)
                return -errno;
        if (asprintf(&abs, "%s/%s", cwd, path) < 0) {
                r = -ENOMEM;
                goto out;
        }
        *ret_path = abs;
out:
        free(cwd);
        return r;
}
