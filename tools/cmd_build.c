/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn build SRC_DIR --store STORE --tag NAME:TAG`: turns a directory into
 * a tagged volume through cairn_build().
 *
 * Everything is validated before the store is touched, so a typo in a tag
 * or a chunk size fails in milliseconds instead of after reading a
 * terabyte.  The manifest digest is the last line of stdout and the only
 * thing there, so scripts can capture it; the human summary goes to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/builder.h"
#include "cairn/ref.h"
#include "cairn/store.h"

#include "cli_util.h"

enum {
        OPT_CHUNK_MIN = 0x100,
        OPT_CHUNK_AVG,
        OPT_CHUNK_MAX,
        OPT_LEVEL,
};

static void build_help(FILE *out)
{
        fputs("Usage: cairn build SRC_DIR --store STORE --tag NAME:TAG [OPTIONS]\n"
              "\n"
              "Builds a volume from the directory SRC_DIR into STORE and points the tag\n"
              "NAME:TAG at it.  Files are split into content-defined chunks; chunks\n"
              "already in the tag's previous version (or in --base) are reused, not\n"
              "stored again.  Sockets, devices and FIFOs are skipped with a warning.\n"
              "\n"
              "Prints the manifest digest (sha256:<64 hex>) as the last line of stdout\n"
              "and a summary on stderr.  A failed build leaves the tag unchanged.\n"
              "\n"
              "Options:\n"
              "  -s, --store STORE          Store to write to (created if missing)\n"
              "  -t, --tag NAME:TAG         Tag to create or update\n"
              "  -b, --base REF             Also dedup against this volume\n"
              "  -p, --profile FILE         Store this access profile with the volume\n"
              "                             (recorded with cairn mount --record-profile);\n"
              "                             mounts replay it to prefetch\n"
              "      --chunk-min SIZE       Smallest chunk (default 512K)\n"
              "      --chunk-avg SIZE       Average chunk, a power of two (default 2M)\n"
              "      --chunk-max SIZE       Largest chunk (default 8M)\n"
              "      --compression-level N  zstd level, 1..19 (default 3)\n"
              "  -j, --threads N            Worker threads (default: one per CPU)\n"
              "  -q, --quiet                No progress and no summary\n"
              "  -h, --help                 Show this help\n"
              "\n"
              "SIZE takes a K, M or G suffix (powers of 1024).  When only --chunk-avg\n"
              "is given, min and max default to a quarter and four times it.  Chunk\n"
              "sizes must satisfy 64 <= min < avg < max <= 64M.\n"
              "\n",
              out);
        cli_store_help(out);
        fputs("\n"
              "Exit status: 0 success, 1 failure, 2 usage error.\n",
              out);
}

/* A chunk size option: bytes that fit the manifest's 32-bit fields.  Reports errors. */
static int parse_chunk_size(const char *opt, const char *arg, uint32_t *ret_size, bool *ret_set)
{
        uint64_t v;
        int r;

        r = cli_parse_size(arg, UINT32_MAX, &v);
        if (r < 0) {
                cli_usage_error("invalid %s '%s': %s", opt, arg,
                                r == -ERANGE ? "too large" : "expected a size like 2M");
                return r;
        }
        *ret_size = (uint32_t)v;
        *ret_set = true;
        return 0;
}

/*
 * NAME:TAG into ret_ref, split at the last ':' because names never contain
 * one.  Reports errors; -EINVAL.
 */
static int parse_tag(const char *arg, struct cairn_ref *ret_ref)
{
        const char *colon = strrchr(arg, ':');
        size_t name_len;

        if (!colon) {
                cli_usage_error("invalid tag '%s': expected NAME:TAG", arg);
                return -EINVAL;
        }
        name_len = (size_t)(colon - arg);
        if (name_len >= sizeof(ret_ref->name) || strlen(colon + 1) >= sizeof(ret_ref->tag)) {
                cli_usage_error("invalid tag '%s': name or tag too long", arg);
                return -EINVAL;
        }
        memcpy(ret_ref->name, arg, name_len);
        ret_ref->name[name_len] = '\0';
        if (!cairn_ref_name_valid(ret_ref->name)) {
                cli_usage_error("invalid name in tag '%s': expected lowercase [a-z0-9._-] "
                                "components separated by '/'",
                                arg);
                return -EINVAL;
        }
        if (!cairn_ref_tag_valid(colon + 1)) {
                cli_usage_error("invalid tag in '%s': expected 1-128 of [A-Za-z0-9_.-]", arg);
                return -EINVAL;
        }
        strcpy(ret_ref->tag, colon + 1);
        ret_ref->by_digest = false;
        return 0;
}

static int check_src_dir(const char *path)
{
        struct stat st;
        int r;

        if (stat(path, &st) < 0 || (S_ISDIR(st.st_mode) && access(path, R_OK | X_OK) < 0)) {
                r = -errno;
                cli_error("cannot read '%s': %s", path, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                cli_error("'%s' is not a directory", path);
                return -ENOTDIR;
        }
        return 0;
}

/* The issue asks for a warning per skipped entry; the library only reports them. */
static void warn_skip(const char *path, const char *why, void *userdata)
{
        char *shown = NULL;

        (void)userdata;
        if (cli_escape(path, &shown) < 0)
                shown = NULL;
        cli_error("warning: skipping '%s': %s", shown ? shown : path, why);
        free(shown);
}

static void print_summary(const char *tag_arg, const struct cairn_build_result *res)
{
        char logical[32], packed[32];

        cli_format_size(res->logical_bytes, logical, sizeof(logical));
        cli_format_size(res->new_pack_bytes, packed, sizeof(packed));
        fprintf(stderr, "built %s: %llu files, %llu directories, %llu symlinks, %s", tag_arg,
                (unsigned long long)res->files, (unsigned long long)res->dirs,
                (unsigned long long)res->symlinks, logical);
        if (res->skipped > 0)
                fprintf(stderr, ", %llu skipped", (unsigned long long)res->skipped);
        fprintf(stderr,
                "\nchunks: %llu referenced, %llu new, %llu reused; "
                "new pack bytes: %s in %u pack%s\n",
                (unsigned long long)res->chunks, (unsigned long long)res->new_chunks,
                (unsigned long long)res->reused_chunks, packed, res->packs_written,
                res->packs_written == 1 ? "" : "s");
}

static int build_run(int argc, char **argv)
{
        static const struct option options[] = {
            {"store", required_argument, NULL, 's'},
            {"tag", required_argument, NULL, 't'},
            {"base", required_argument, NULL, 'b'},
            {"profile", required_argument, NULL, 'p'},
            {"chunk-min", required_argument, NULL, OPT_CHUNK_MIN},
            {"chunk-avg", required_argument, NULL, OPT_CHUNK_AVG},
            {"chunk-max", required_argument, NULL, OPT_CHUNK_MAX},
            {"compression-level", required_argument, NULL, OPT_LEVEL},
            {"threads", required_argument, NULL, 'j'},
            {"quiet", no_argument, NULL, 'q'},
            {"help", no_argument, NULL, 'h'},
            CLI_STORE_LONG_OPTIONS,
            {},
        };
        struct cli_store_args store_args;
        struct cairn_build_options opts;
        struct cairn_build_result res;
        struct cairn_store *store = NULL;
        struct cairn_ref tag_ref, base_ref;
        const char *store_url = NULL, *tag_arg = NULL, *base = NULL, *src;
        bool min_set = false, avg_set = false, max_set = false, quiet = false;
        char errbuf[512] = "", digest[CAIRN_DIGEST_STR_SIZE];
        uint64_t v;
        int c, r, ret = CLI_EXIT_FAILURE;

        cairn_build_options_init(&opts);
        cli_store_args_init(&store_args);
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":s:t:b:p:j:qh", options, NULL)) != -1) {
                switch (c) {
                case 's':
                        store_url = optarg;
                        break;
                case 't':
                        tag_arg = optarg;
                        break;
                case 'b':
                        base = optarg;
                        break;
                case 'p':
                        opts.profile_path = optarg;
                        break;
                case OPT_CHUNK_MIN:
                        if (parse_chunk_size("--chunk-min", optarg, &opts.chunking.min_size,
                                             &min_set) < 0)
                                return CLI_EXIT_USAGE;
                        break;
                case OPT_CHUNK_AVG:
                        if (parse_chunk_size("--chunk-avg", optarg, &opts.chunking.avg_size,
                                             &avg_set) < 0)
                                return CLI_EXIT_USAGE;
                        break;
                case OPT_CHUNK_MAX:
                        if (parse_chunk_size("--chunk-max", optarg, &opts.chunking.max_size,
                                             &max_set) < 0)
                                return CLI_EXIT_USAGE;
                        break;
                case OPT_LEVEL:
                        if (cli_parse_uint(optarg, 1, 19, &v) < 0)
                                return cli_usage_error("invalid --compression-level '%s': "
                                                       "expected 1..19",
                                                       optarg);
                        opts.compression_level = (int)v;
                        break;
                case 'j':
                        if (cli_parse_uint(optarg, 0, 1024, &v) < 0)
                                return cli_usage_error("invalid --threads '%s': expected 0..1024",
                                                       optarg);
                        opts.threads = (unsigned)v;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 'h':
                        build_help(stdout);
                        return CLI_EXIT_OK;
                default:
                        r = cli_store_option_or_fail(&store_args, c, optarg, argv);
                        if (r)
                                return r;
                        break;
                }
        }

        if (optind >= argc)
                return cli_usage_error("missing SRC_DIR");
        if (argc - optind > 1)
                return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);
        src = argv[optind];
        if (!store_url)
                return cli_usage_error("missing --store STORE");
        if (!tag_arg)
                return cli_usage_error("missing --tag NAME:TAG");
        if (parse_tag(tag_arg, &tag_ref) < 0)
                return CLI_EXIT_USAGE;
        if (base && cli_parse_ref(base, &base_ref) < 0)
                return CLI_EXIT_USAGE;
        if (cli_store_check(store_url, &store_args) < 0)
                return CLI_EXIT_USAGE;

        /* Only an average given: scale min and max with it, as the defaults do. */
        if (avg_set && !min_set)
                opts.chunking.min_size = opts.chunking.avg_size / 4;
        if (avg_set && !max_set)
                opts.chunking.max_size = opts.chunking.avg_size > UINT32_MAX / 4
                                             ? UINT32_MAX
                                             : opts.chunking.avg_size * 4;
        if (cairn_chunker_params_validate(&opts.chunking) < 0) {
                ret = cli_usage_error("invalid chunk sizes min %u, avg %u, max %u: need "
                                      "64 <= min < avg < max <= 64M, avg a power of two",
                                      opts.chunking.min_size, opts.chunking.avg_size,
                                      opts.chunking.max_size);
                goto out;
        }

        if (check_src_dir(src) < 0)
                goto out;
        if (cli_open_store(store_url, &store_args, true, &store) < 0)
                goto out;

        opts.src_dir = src;
        opts.store = store;
        opts.name = tag_ref.name;
        opts.tag = tag_ref.tag;
        opts.base_ref = base;
        opts.progress = !quiet && isatty(STDERR_FILENO);
        opts.on_skip = warn_skip;

        r = cairn_build(&opts, &res, errbuf, sizeof(errbuf));
        if (r < 0) {
                cli_error("%s", errbuf[0] ? errbuf : strerror(-r));
                goto out;
        }

        if (!quiet)
                print_summary(tag_arg, &res);
        cairn_digest_to_string(&res.manifest, digest);
        printf("%s\n", digest);
        ret = CLI_EXIT_OK;
out:
        cairn_store_free(store);
        return ret;
}

const struct cli_command cli_cmd_build = {
    .name = "build",
    .summary = "Build a volume from a directory and tag it in a store",
    .run = build_run,
    .help = build_help,
};
