/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the `cairn` commands: one error format, strict number
 * and size parsing, and opening stores and volumes with messages that name
 * what failed.  Library calls return -errno and log nothing above debug, so
 * this is where a failure gets its one line for the user.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

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

/*
 * strtoull() accepts leading whitespace and a minus sign (and then wraps),
 * so the digits are checked by hand before trusting it.
 */
static int parse_digits(const char *s, const char **ret_end, uint64_t *ret_value)
{
        uint64_t v = 0;
        const char *p = s;

        if (!isdigit((unsigned char)*p))
                return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
                unsigned d = (unsigned)(*p - '0');

                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret_end = p;
        *ret_value = v;
        return 0;
}

int cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
        const char *end;
        uint64_t v;
        int r;

        r = parse_digits(s, &end, &v);
        if (r < 0)
                return r;
        if (*end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret_value = v;
        return 0;
}

int cli_parse_size(const char *s, uint64_t max, uint64_t *ret_size)
{
        const char *end;
        unsigned shift = 0;
        uint64_t v;
        int r;

        r = parse_digits(s, &end, &v);
        if (r < 0)
                return r;
        switch (toupper((unsigned char)*end)) {
        case '\0':
                break;
        case 'B':
                end++;
                break;
        case 'K':
                shift = 10;
                break;
        case 'M':
                shift = 20;
                break;
        case 'G':
                shift = 30;
                break;
        case 'T':
                shift = 40;
                break;
        default:
                return -EINVAL;
        }
        if (shift > 0) {
                end++;
                if (strcasecmp(end, "ib") == 0)
                        end += 2;
                else if (strcasecmp(end, "b") == 0)
                        end += 1;
        }
        if (*end != '\0')
                return -EINVAL;
        if (shift > 0 && v > (UINT64_MAX >> shift))
                return -ERANGE;
        v <<= shift;
        if (v > max)
                return -ERANGE;
        *ret_size = v;
        return 0;
}

int cli_parse_ref(const char *s, struct cairn_ref *ret_ref)
{
        int r;

        r = cairn_ref_parse(s, ret_ref);
        if (r < 0)
                cli_error("invalid reference '%s': expected NAME:TAG or NAME@sha256:<64 hex>", s);
        return r;
}

int cli_open_store(const char *url, bool create, struct cairn_store **ret_store)
{
        int r;

        r = cairn_store_open(url, create, ret_store);
        if (r < 0)
                cli_error("cannot open store '%s': %s", url, strerror(-r));
        return r;
}

int cli_open_volume(struct cairn_store *store, const struct cairn_ref *ref,
                    struct cairn_volume **ret_volume)
{
        struct cairn_volume_options opts = {.cache_dir = NULL};
        char name[CAIRN_REF_NAME_MAX + CAIRN_DIGEST_STR_SIZE + 8];
        char errbuf[512] = "";
        int r;

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
