/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn cache stats|prune|verify [--cache-dir DIR]`: looking after the
 * node-local chunk cache that mounts and `cairn warm` share.
 *
 * Mounts keep the cache within its limit on their own and drop a damaged
 * entry when they read it; these commands are for the operator: how big is
 * it really (stats walks every entry, where the mounts only keep a shared
 * counter), make room or start afresh (prune), and find damage before a
 * reader does (verify re-hashes every entry against its name).  All three
 * are safe while volumes are mounted: entries are immutable files, and
 * eviction is serialized with the mounts' own by the cache's lock.
 *
 * The commands refuse a directory that is not already a cache: opening one
 * lays out chunks/, manifests/, tmp/ and usage, and a typo in --cache-dir
 * should not do that to, say, a home directory.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/cache.h"

#include "cli_util.h"

enum {
        OPT_CACHE_SIZE = 0x100,
        OPT_ALL,
        OPT_JSON,
};

/* How often verify redraws its progress line on a terminal. */
#define PROGRESS_INTERVAL_NS (100ull * 1000 * 1000)

static void cache_help(FILE *out)
{
        fputs("Usage: cairn cache COMMAND [--cache-dir DIR] [OPTIONS]\n"
              "\n"
              "Looks after the node-local chunk cache that mounts and 'cairn warm' share.\n"
              "Safe to run while volumes are mounted.\n"
              "\n"
              "Commands:\n"
              "  stats    Walk the cache: entries, bytes, the shared size counter,\n"
              "           cached manifests and leftover temporary files\n"
              "  prune    Evict least recently used entries down to --cache-size (or\n"
              "           all of them with --all), remove temporary files of writes\n"
              "           interrupted over an hour ago, and reset the size counter to\n"
              "           what is on disk\n"
              "  verify   Re-hash every entry against its name and remove the damaged\n"
              "           ones (mounts fetch those chunks again when they need them)\n"
              "\n"
              "Options:\n"
              "  -c, --cache-dir DIR    The cache (default: /var/cache/cairn for root,\n"
              "                         $XDG_CACHE_HOME/cairn otherwise)\n"
              "      --cache-size SIZE  prune: evict down to SIZE (K, M, G, T suffixes)\n"
              "      --all              prune: remove every entry\n"
              "      --json             Print one JSON object with raw integers\n"
              "  -h, --help             Show this help\n"
              "\n"
              "Bytes are counted as the cache accounts them: each entry's 16-byte header\n"
              "and data, rounded up to 4 KiB.  prune without --cache-size or --all\n"
              "evicts nothing.  verify shows its progress when stderr is a terminal.\n"
              "\n"
              "Exit status: 0 success (for verify: the cache holds no damaged entry\n"
              "any more; how many were found and removed is printed), 1 failure,\n"
              "2 usage error.\n",
              out);
}

/*
 * Opens the cache at dir, which must already be one.  No size limit and
 * no free-space floor: these commands only ever remove entries.
 */
static int open_cache(const char *dir, struct cairn_cache **ret_cache)
{
        struct cairn_cache_options opts = {.no_free_floor = true};
        char *chunks = NULL;
        struct stat st;
        int r;

        if (stat(dir, &st) < 0) {
                r = -errno;
                cli_error("cannot use cache directory '%s': %s", dir, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                cli_error("cache directory '%s' is not a directory", dir);
                return -ENOTDIR;
        }
        if (asprintf(&chunks, "%s/chunks", dir) < 0) {
                cli_error("out of memory");
                return -ENOMEM;
        }
        r = stat(chunks, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
        free(chunks);
        if (r == -ENOENT || r == -ENOTDIR) {
                cli_error("'%s' is not a cairn cache (it has no chunks/ directory)", dir);
                return r;
        }
        if (r < 0) {
                cli_error("cannot use cache directory '%s': %s", dir, strerror(-r));
                return r;
        }
        r = cairn_cache_open_with(dir, &opts, ret_cache);
        if (r < 0)
                cli_error("cannot open cache '%s': %s", dir, strerror(-r));
        return r;
}

static void json_u64(const char *key, uint64_t v, bool last)
{
        printf("  \"%s\": %" PRIu64 "%s\n", key, v, last ? "" : ",");
}

static void json_begin(const char *dir)
{
        fputs("{\n  \"cache_dir\": ", stdout);
        cli_json_string(dir);
        fputs(",\n", stdout);
}

static int run_stats(struct cairn_cache *cache, bool json)
{
        struct cairn_cache_stats st;
        char a[64];
        int r;

        r = cairn_cache_scan(cache, &st);
        if (r < 0) {
                cli_error("cannot scan cache '%s': %s", cairn_cache_dir(cache), strerror(-r));
                return CLI_EXIT_FAILURE;
        }
        if (json) {
                json_begin(cairn_cache_dir(cache));
                json_u64("entries", st.entries, false);
                json_u64("bytes", st.bytes, false);
                json_u64("accounted_bytes", st.accounted_bytes, false);
                json_u64("manifests", st.manifests, false);
                json_u64("manifest_bytes", st.manifest_bytes, false);
                json_u64("temp_files", st.temp_files, true);
                fputs("}\n", stdout);
                return CLI_EXIT_OK;
        }
        printf("cache:            %s\n", cairn_cache_dir(cache));
        printf("entries:          %" PRIu64 "\n", st.entries);
        printf("bytes:            %s\n", cli_format_size_exact(st.bytes, a, sizeof(a)));
        /* Writers in flight, or a crashed one, make these differ; prune reconciles. */
        printf("accounted bytes:  %s\n", cli_format_size_exact(st.accounted_bytes, a, sizeof(a)));
        printf("manifests:        %" PRIu64 ", %s\n", st.manifests,
               cli_format_size_exact(st.manifest_bytes, a, sizeof(a)));
        printf("temporary files:  %" PRIu64 "\n", st.temp_files);
        return CLI_EXIT_OK;
}

static int run_prune(struct cairn_cache *cache, uint64_t target, bool json)
{
        struct cairn_cache_stats st;
        char a[32], b[32];
        int r;

        r = cairn_cache_prune(cache, target, &st);
        if (r < 0) {
                cli_error("cannot prune cache '%s': %s", cairn_cache_dir(cache), strerror(-r));
                return CLI_EXIT_FAILURE;
        }
        if (json) {
                json_begin(cairn_cache_dir(cache));
                json_u64("target_bytes", target, false);
                json_u64("evicted", st.evicted, false);
                json_u64("evicted_bytes", st.evicted_bytes, false);
                json_u64("entries", st.entries, false);
                json_u64("bytes", st.bytes, false);
                json_u64("accounted_bytes_before", st.accounted_bytes, false);
                json_u64("temp_files", st.temp_files, true);
                fputs("}\n", stdout);
                return CLI_EXIT_OK;
        }
        cli_format_size(st.evicted_bytes, a, sizeof(a));
        cli_format_size(st.bytes, b, sizeof(b));
        printf("evicted %" PRIu64 " entr%s (%s); %" PRIu64 " entr%s (%s) remain\n", st.evicted,
               st.evicted == 1 ? "y" : "ies", a, st.entries, st.entries == 1 ? "y" : "ies", b);
        return CLI_EXIT_OK;
}

struct verify_progress {
        uint64_t total; /* entries found by a scan first; 0 if unknown */
        uint64_t last_ns;
};

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void verify_progress(const struct cairn_cache_stats *st, void *userdata)
{
        struct verify_progress *p = userdata;
        uint64_t now = now_ns();

        if (now - p->last_ns < PROGRESS_INTERVAL_NS)
                return;
        p->last_ns = now;
        if (p->total >= st->checked)
                fprintf(stderr, "\rverifying: %" PRIu64 "/%" PRIu64 " entries", st->checked,
                        p->total);
        else
                fprintf(stderr, "\rverifying: %" PRIu64 " entries", st->checked);
        fprintf(stderr, ", %" PRIu64 " damaged\033[K", st->damaged);
}

static int run_verify(struct cairn_cache *cache, bool json)
{
        struct verify_progress prog = {0};
        struct cairn_cache_stats st;
        bool tty = isatty(STDERR_FILENO);
        char a[32];
        int r;

        /* A walk without reading is cheap next to hashing, and gives the bar its end. */
        if (tty && cairn_cache_scan(cache, &st) >= 0)
                prog.total = st.entries;
        r = cairn_cache_verify(cache, tty ? verify_progress : NULL, &prog, &st);
        if (tty)
                fputs("\r\033[K", stderr);
        if (r < 0) {
                cli_error("cannot verify cache '%s': %s", cairn_cache_dir(cache), strerror(-r));
                return CLI_EXIT_FAILURE;
        }
        if (json) {
                json_begin(cairn_cache_dir(cache));
                json_u64("checked", st.checked, false);
                json_u64("damaged_removed", st.damaged, false);
                json_u64("entries", st.entries, false);
                json_u64("bytes", st.bytes, true);
                fputs("}\n", stdout);
                return CLI_EXIT_OK;
        }
        cli_format_size(st.bytes, a, sizeof(a));
        printf("verified %" PRIu64 " entr%s: ", st.checked, st.checked == 1 ? "y" : "ies");
        if (st.damaged == 0)
                printf("ok, %s\n", a);
        else
                printf("%" PRIu64 " damaged entr%s removed, %" PRIu64 " intact (%s)\n", st.damaged,
                       st.damaged == 1 ? "y" : "ies", st.entries, a);
        return CLI_EXIT_OK;
}

static int cache_run(int argc, char **argv)
{
        static const struct option options[] = {
            {"cache-dir", required_argument, NULL, 'c'},
            {"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
            {"all", no_argument, NULL, OPT_ALL},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        const char *dir_arg = NULL, *size_arg = NULL, *sub;
        struct cairn_cache *cache = NULL;
        char default_dir[PATH_MAX];
        bool all = false, json = false;
        uint64_t target = UINT64_MAX;
        char *dir = NULL;
        int c, r, ret = CLI_EXIT_FAILURE;

        /* Options may come before or after COMMAND: getopt_long() permutes. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":c:h", options, NULL)) != -1) {
                switch (c) {
                case 'c':
                        dir_arg = optarg;
                        break;
                case OPT_CACHE_SIZE:
                        if (cli_parse_size(optarg, UINT64_MAX, &target) < 0)
                                return cli_usage_error("invalid --cache-size '%s': expected a "
                                                       "size like 10G",
                                                       optarg);
                        size_arg = optarg;
                        break;
                case OPT_ALL:
                        all = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        cache_help(stdout);
                        return CLI_EXIT_OK;
                default:
                        return cli_getopt_error(c, argv);
                }
        }
        if (optind >= argc)
                return cli_usage_error("missing COMMAND (stats, prune or verify)");
        if (argc - optind > 1)
                return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);
        sub = argv[optind];
        if (strcmp(sub, "stats") != 0 && strcmp(sub, "prune") != 0 && strcmp(sub, "verify") != 0)
                return cli_usage_error("unknown cache command '%s' (stats, prune or verify)", sub);
        if (strcmp(sub, "prune") != 0 && (size_arg || all))
                return cli_usage_error("%s applies to 'cairn cache prune' only",
                                       size_arg ? "--cache-size" : "--all");
        if (size_arg && all)
                return cli_usage_error("--cache-size and --all exclude each other");
        if (all)
                target = 0;

        if (!dir_arg) {
                r = cairn_cache_default_dir(default_dir, sizeof(default_dir));
                if (r < 0) {
                        cli_error("cannot find the default cache directory (use --cache-dir): %s",
                                  strerror(-r));
                        return CLI_EXIT_FAILURE;
                }
                dir_arg = default_dir;
        }
        if (dir_arg[0] == '\0')
                return cli_usage_error("invalid --cache-dir '': expected a directory");
        r = cli_absolute_path(dir_arg, &dir);
        if (r < 0) {
                cli_error("cannot use cache directory '%s': %s", dir_arg, strerror(-r));
                return CLI_EXIT_FAILURE;
        }
        if (open_cache(dir, &cache) < 0)
                goto out;

        if (strcmp(sub, "stats") == 0)
                ret = run_stats(cache, json);
        else if (strcmp(sub, "prune") == 0)
                ret = run_prune(cache, target, json);
        else
                ret = run_verify(cache, json);
out:
        cairn_cache_free(cache);
        free(dir);
        return ret;
}

const struct cli_command cli_cmd_cache = {
    .name = "cache",
    .summary = "Show, prune or verify the node's chunk cache",
    .run = cache_run,
    .help = cache_help,
};
