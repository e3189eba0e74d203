/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn warm --store STORE REF [--cache-dir DIR] [--profile FILE]
 *  [--paths GLOB...] [--parallel N] [--json]`: fill a node's chunk cache
 * before a rollout, so that pods start from local NVMe instead of object
 * storage.
 *
 * The chunk list is the recorded profile's (in its order) and/or every
 * chunk of the files matching the globs, or the whole volume; repeated
 * chunks are fetched once.  The work is cairn_volume_warm(): N parallel
 * range requests, coalesced, each chunk verified before it is cached.
 * Chunks already cached are skipped, so a second run fetches nothing and
 * says so.  Several warms and mounts may share one cache directory.
 */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/cache.h"
#include "cairn/manifest.h"
#include "cairn/profile.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#include "cli_util.h"

/*
 * Bytes per range request.  Smaller than a mount's read-ahead batches: a
 * warm keeps `parallel` of them in flight, and every buffer that is not
 * recycled yet is a fresh mapping whose pages the kernel must zero (on a
 * VM, often the host first); 8 MiB per request keeps 8 workers within 128
 * MiB and the loopback throughput measured with 16 MiB (bench/peers.sh).
 */
#define WARM_COALESCE (8u << 20)

#define PARALLEL_DEFAULT 8u
#define PARALLEL_MAX 64u

static void warm_help(FILE *out)
{
        fputs("Usage: cairn warm --store STORE REF [OPTIONS] [--paths GLOB...]\n"
              "\n"
              "Fetches and verifies the chunks of volume REF into the node's chunk\n"
              "cache, so that mounts on this node read them locally.  Already cached\n"
              "chunks are skipped: run it again and it fetches nothing.\n"
              "\n"
              "Options:\n"
              "  -s, --store STORE      Store holding the volume\n"
              "  -c, --cache-dir DIR    Cache to fill (default: /var/cache/cairn for\n"
              "                         root, else $XDG_CACHE_HOME/cairn)\n"
              "  -p, --profile FILE     Fetch the chunks of a recorded access profile,\n"
              "                         in its order (see cairn mount --record-profile)\n"
              "      --paths GLOB...    Only files matching a glob (repeatable; further\n"
              "                         arguments after REF are globs too).  A glob\n"
              "                         without '/' also matches file names in any\n"
              "                         directory; '*' matches across '/'\n"
              "  -j, --parallel N       Concurrent range requests (default 8)\n"
              "      --cache-size SIZE  Keep the cache within SIZE (K, M, G suffixes)\n"
              "      --json             Print a JSON summary on stdout\n"
              "  -h, --help             Show this help\n"
              "\n",
              out);
        cli_store_help(out);
        fputs("\n"
              "Before a rollout, run it on every node (a DaemonSet or a Job per node,\n"
              "see docs/KUBERNETES.md) and start the rollout when it has exited 0.\n"
              "\n"
              "Exit status: 0 every chunk cached, 1 failure (some chunk could not be\n"
              "fetched or verified), 2 usage error.\n",
              out);
}

/* Chunk list under construction: order kept, each chunk id once. */
struct chunk_list {
        uint64_t *chunks;
        size_t n, cap;
        uint64_t *seen;  /* open addressing over chunk index + 1 */
        size_t seen_cap;
        const struct cairn_manifest *m;
        uint64_t files;
};

static int list_init(struct chunk_list *l, const struct cairn_manifest *m)
{
        l->m = m;
        l->seen_cap = 16;
        while (l->seen_cap < 2 * (size_t)m->hdr->chunk_count)
                l->seen_cap *= 2;
        l->seen = calloc(l->seen_cap, sizeof(*l->seen));
        return l->seen ? 0 : -ENOMEM;
}

static int list_add(struct chunk_list *l, uint64_t idx)
{
        const struct cairn_digest *id = &l->m->chunks[idx].id;
        uint64_t h;
        memcpy(&h, id->bytes, sizeof(h));
        size_t s = h & (l->seen_cap - 1);
        for (; l->seen[s]; s = (s + 1) & (l->seen_cap - 1))
                if (cairn_digest_equal(&l->m->chunks[l->seen[s] - 1].id, id))
                        return 0;
        l->seen[s] = idx + 1;
        if (l->n == l->cap) {
                size_t ncap = l->cap ? l->cap * 2 : 1024;
                uint64_t *p = realloc(l->chunks, ncap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                l->chunks = p;
                l->cap = ncap;
        }
        l->chunks[l->n++] = idx;
        return 0;
}

static bool path_matches(const char *path, char *const *globs, size_t nglobs)
{
        if (nglobs == 0)
                return true;
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        for (size_t i = 0; i < nglobs; i++) {
                if (fnmatch(globs[i], path, 0) == 0)
                        return true;
                if (!strchr(globs[i], '/') && fnmatch(globs[i], base, 0) == 0)
                        return true;
        }
        return false;
}

/* Depth-first walk adding the chunks of every matching regular file. */
static int add_files(struct chunk_list *l, uint32_t dir, char *path, size_t len,
                     char *const *globs, size_t nglobs)
{
        const struct cairn_manifest *m = l->m;
        const struct cairn_manifest_inode *d = cairn_manifest_inode(m, dir);
        for (uint64_t i = 0; i < d->count; i++) {
                const struct cairn_manifest_dirent *de = cairn_manifest_dirent_at(m, dir, i);
                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, de->inode);
                size_t need = len + (len ? 1 : 0) + de->name_len;
                if (need >= 4096)
                        continue; /* deeper than any path we print; nothing to warm by name */
                size_t at = len;
                if (len)
                        path[at++] = '/';
                memcpy(path + at, cairn_manifest_string(m, de->name_offset), de->name_len);
                path[need] = '\0';
                int r = 0;
                if ((in->mode & S_IFMT) == S_IFDIR) {
                        r = add_files(l, de->inode, path, need, globs, nglobs);
                } else if ((in->mode & S_IFMT) == S_IFREG && path_matches(path, globs, nglobs)) {
                        l->files++;
                        for (uint64_t k = 0; k < in->count && r >= 0; k++)
                                r = list_add(l, in->first + k);
                }
                path[len] = '\0';
                if (r < 0)
                        return r;
        }
        return 0;
}

struct progress_ctx {
        bool tty;
        uint64_t files;
        struct timespec start;
};

static double seconds_since(const struct timespec *t0)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void show_progress(const struct cairn_warm_progress *p, void *ctx)
{
        struct progress_ctx *pc = ctx;
        if (!pc->tty)
                return;
        char done[32], total[32], rate[32];
        double t = seconds_since(&pc->start);
        double bps = t > 0 ? (double)p->bytes_fetched / t : 0;
        uint64_t left = p->bytes_total - p->bytes_done;
        cli_format_size(p->bytes_done, done, sizeof(done));
        cli_format_size(p->bytes_total, total, sizeof(total));
        cli_format_size((uint64_t)bps, rate, sizeof(rate));
        unsigned pct = p->bytes_total ? (unsigned)(p->bytes_done * 100 / p->bytes_total) : 100;
        char bar[21];
        for (int i = 0; i < 20; i++)
                bar[i] = i < (int)(pct / 5) ? '#' : '.';
        bar[20] = '\0';
        char eta[32] = "--";
        if (bps > 0 && left)
                snprintf(eta, sizeof(eta), "%.0fs", (double)left / bps);
        else if (!left)
                snprintf(eta, sizeof(eta), "0s");
        fprintf(stderr, "\r\033[K[%s] %3u%% %s/%s %s/s ETA %s, %" PRIu64 " files", bar, pct, done,
                total, rate, eta, pc->files);
}

static int run_warm(int argc, char **argv)
{
        static const struct option options[] = {
            {"store", required_argument, NULL, 's'},
            {"cache-dir", required_argument, NULL, 'c'},
            {"profile", required_argument, NULL, 'p'},
            {"paths", required_argument, NULL, 'P'},
            {"parallel", required_argument, NULL, 'j'},
            {"cache-size", required_argument, NULL, 'Z'},
            {"json", no_argument, NULL, 'J'},
            {"help", no_argument, NULL, 'h'},
            CLI_STORE_LONG_OPTIONS,
            {NULL, 0, NULL, 0},
        };
        struct cli_store_args sargs;
        const char *store_url = NULL, *cache_dir = NULL, *profile_path = NULL;
        char **globs = NULL;
        size_t nglobs = 0;
        uint64_t parallel = PARALLEL_DEFAULT, cache_size = 0;
        bool json = false;
        int c, ret = CLI_EXIT_FAILURE;
        struct cairn_store *store = NULL;
        struct cairn_volume *vol = NULL;
        struct chunk_list list = {0};
        struct cairn_profile profile = {0};
        char default_cache[4096];

        cli_store_args_init(&sargs);
        globs = calloc((size_t)argc + 1, sizeof(*globs));
        if (!globs)
                return CLI_EXIT_FAILURE;
        while ((c = getopt_long(argc, argv, ":s:c:p:j:h", options, NULL)) != -1) {
                int s = cli_store_parse_option(&sargs, c, optarg);
                if (s < 0) {
                        ret = CLI_EXIT_USAGE;
                        goto out;
                }
                if (s > 0)
                        continue;
                switch (c) {
                case 's':
                        store_url = optarg;
                        break;
                case 'c':
                        cache_dir = optarg;
                        break;
                case 'p':
                        profile_path = optarg;
                        break;
                case 'P':
                        globs[nglobs++] = optarg;
                        break;
                case 'j':
                        if (cli_parse_uint(optarg, 1, PARALLEL_MAX, &parallel) < 0) {
                                ret = cli_usage_error("invalid --parallel '%s': expected 1-%u",
                                                      optarg, PARALLEL_MAX);
                                goto out;
                        }
                        break;
                case 'Z':
                        if (cli_parse_size(optarg, UINT64_MAX, &cache_size) < 0 || !cache_size) {
                                ret = cli_usage_error("invalid --cache-size '%s': expected a "
                                                      "size like 10G",
                                                      optarg);
                                goto out;
                        }
                        break;
                case 'J':
                        json = true;
                        break;
                case 'h':
                        warm_help(stdout);
                        ret = CLI_EXIT_OK;
                        goto out;
                default:
                        ret = cli_getopt_error(c, argv);
                        goto out;
                }
        }
        if (!store_url) {
                ret = cli_usage_error("missing --store");
                goto out;
        }
        if (optind >= argc) {
                ret = cli_usage_error("missing REF");
                goto out;
        }
        const char *ref_str = argv[optind++];
        if (optind < argc && nglobs == 0) {
                ret = cli_usage_error("unexpected argument '%s' (globs follow --paths)",
                                      argv[optind]);
                goto out;
        }
        while (optind < argc)
                globs[nglobs++] = argv[optind++];
        struct cairn_ref ref;
        if (cli_parse_ref(ref_str, &ref) < 0) {
                ret = CLI_EXIT_USAGE;
                goto out;
        }
        if (cli_store_check(store_url, &sargs) < 0) {
                ret = CLI_EXIT_USAGE;
                goto out;
        }
        if (!cache_dir) {
                int r = cairn_cache_default_dir(default_cache, sizeof(default_cache));
                if (r < 0) {
                        cli_error("cannot find the default cache directory (use --cache-dir): %s",
                                  strerror(-r));
                        goto out;
                }
                cache_dir = default_cache;
        }
        if (profile_path) {
                char why[256] = "";
                int r = cairn_profile_load(profile_path, &profile, why, sizeof(why));
                if (r < 0) {
                        cli_error("cannot load profile: %s", why[0] ? why : strerror(-r));
                        goto out;
                }
        }

        if (cli_open_store(store_url, &sargs, false, &store) < 0)
                goto out;
        struct cairn_volume_options vopts = {
                .cache_dir = cache_dir,
                .deadline_ms = sargs.opts.deadline_ms,
                .cache_max_bytes = cache_size,
                /* Room for every worker's coalesced batch, decoded, twice over. */
                .memory_limit = (size_t)parallel * 2 * WARM_COALESCE,
                .coalesce_max = WARM_COALESCE,
        };
        char why[512] = "";
        int r = cairn_volume_open(store, &ref, &vopts, &vol, why, sizeof(why));
        if (r < 0) {
                cli_error("cannot open '%s': %s", ref_str, why[0] ? why : strerror(-r));
                goto out;
        }
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        if (list_init(&list, m) < 0) {
                cli_error("out of memory");
                goto out;
        }
        if (profile_path) {
                uint64_t *pchunks = NULL;
                size_t pn = 0;
                r = cairn_profile_resolve(&profile, m, &pchunks, &pn);
                for (size_t i = 0; r >= 0 && i < pn; i++)
                        r = list_add(&list, pchunks[i]);
                free(pchunks);
        }
        if (r >= 0 && (!profile_path || nglobs)) {
                char path[4096] = "";
                r = add_files(&list, 0, path, 0, globs, nglobs);
        }
        if (r < 0) {
                cli_error("cannot list chunks: %s", strerror(-r));
                goto out;
        }

        struct progress_ctx pc = {.tty = isatty(STDERR_FILENO) && !json, .files = list.files};
        clock_gettime(CLOCK_MONOTONIC, &pc.start);
        struct cairn_warm_progress p;
        r = cairn_volume_warm(vol, list.chunks, list.n, (unsigned)parallel, show_progress, &pc, &p);
        double secs = seconds_since(&pc.start);
        if (pc.tty)
                fputc('\n', stderr);
        char refbuf[CAIRN_REF_NAME_MAX + CAIRN_DIGEST_STR_SIZE + 8];
        cairn_ref_format(&ref, refbuf, sizeof(refbuf));
        char digest[CAIRN_DIGEST_STR_SIZE];
        cairn_digest_to_string(cairn_volume_digest(vol), digest);
        if (json) {
                fputs("{\n  \"ref\": ", stdout);
                cli_json_string(refbuf);
                fputs(",\n  \"manifest\": ", stdout);
                cli_json_string(digest);
                fputs(",\n  \"cache_dir\": ", stdout);
                cli_json_string(cache_dir);
                printf(",\n  \"files\": %" PRIu64 ",\n  \"chunks_total\": %" PRIu64
                       ",\n  \"chunks_cached\": %" PRIu64 ",\n  \"chunks_fetched\": %" PRIu64
                       ",\n  \"chunks_failed\": %" PRIu64 ",\n  \"bytes_total\": %" PRIu64
                       ",\n  \"bytes_cached\": %" PRIu64 ",\n  \"bytes_fetched\": %" PRIu64
                       ",\n  \"stored_bytes_fetched\": %" PRIu64 ",\n  \"seconds\": %.3f,\n"
                       "  \"bytes_per_second\": %.0f,\n  \"ok\": %s\n}\n",
                       list.files, p.chunks_total, p.chunks_cached, p.chunks_fetched,
                       p.chunks_failed, p.bytes_total, p.bytes_cached, p.bytes_fetched,
                       p.stored_fetched, secs, secs > 0 ? (double)p.bytes_fetched / secs : 0.0,
                       r >= 0 ? "true" : "false");
        } else {
                char total[32], fetched[32], rate[32];
                cli_format_size(p.bytes_total, total, sizeof(total));
                cli_format_size(p.bytes_fetched, fetched, sizeof(fetched));
                cli_format_size(secs > 0 ? (uint64_t)((double)p.bytes_fetched / secs) : 0, rate,
                                sizeof(rate));
                if (p.chunks_fetched == 0 && p.chunks_failed == 0)
                        fprintf(stderr,
                                "nothing to fetch: all %" PRIu64 " chunks (%s) of %s were "
                                "already cached\n",
                                p.chunks_total, total, refbuf);
                else
                        fprintf(stderr,
                                "warmed %s: fetched %" PRIu64 " chunks (%s) in %.1f s (%s/s); "
                                "%" PRIu64 " were already cached, %" PRIu64 " failed\n",
                                refbuf, p.chunks_fetched, fetched, secs, rate, p.chunks_cached,
                                p.chunks_failed);
        }
        if (r < 0) {
                if (r == -EIO)
                        cli_error("%" PRIu64 " chunks could not be fetched or verified",
                                  p.chunks_failed);
                else
                        cli_error("warm failed: %s", strerror(-r));
                goto out;
        }
        ret = CLI_EXIT_OK;
out:
        cairn_profile_release(&profile);
        free(list.chunks);
        free(list.seen);
        cairn_volume_free(vol);
        cairn_store_free(store);
        free(globs);
        return ret;
}

const struct cli_command cli_cmd_warm = {
        .name = "warm",
        .summary = "Fill the node's chunk cache with a volume before it is needed",
        .run = run_warm,
        .help = warm_help,
};
