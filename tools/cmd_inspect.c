/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn inspect --store STORE REF [--base REF] [--json]`: what a volume
 * holds and what it costs in the store.
 *
 * Only the manifest is read (and verified against its digest); the figures
 * come from cairn_manifest_stats().  Stored size is what the volume's
 * distinct chunks occupy; blob bytes is the size of the packs it points
 * into, which can be larger when packs are shared with other volumes.  The
 * --json form prints the same figures as raw integers for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "cairn/manifest.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#include "cli_util.h"

#define REF_STR_SIZE (CAIRN_REF_NAME_MAX + CAIRN_DIGEST_STR_SIZE + 8)

static void inspect_help(FILE *out)
{
        fputs("Usage: cairn inspect --store STORE REF [OPTIONS]\n"
              "\n"
              "Shows what the volume REF holds and how it is stored: files, logical\n"
              "size, chunks, stored (compressed) size, packs, chunking parameters, and\n"
              "with --base how much it shares with another volume.  Reads only the\n"
              "manifest.\n"
              "\n"
              "Options:\n"
              "  -s, --store STORE   Store holding the volume\n"
              "  -b, --base REF      Compare with this volume (dedup figures)\n"
              "      --json          Print one JSON object with raw integers\n"
              "  -h, --help          Show this help\n"
              "\n",
              out);
        cli_store_help(out);
        fputs("\n"
              "Exit status: 0 success, 1 failure, 2 usage error.\n",
              out);
}

struct inspect_report {
        char ref[REF_STR_SIZE];
        char digest[CAIRN_DIGEST_STR_SIZE];
        uint64_t manifest_size;
        uint32_t chunk_min, chunk_avg, chunk_max;
        struct cairn_manifest_stats stats;
        bool has_base;
        char base_ref[REF_STR_SIZE];
        char base_digest[CAIRN_DIGEST_STR_SIZE];
        uint64_t new_chunks, new_bytes; /* distinct chunks (stored bytes) not in the base */
};

static void json_field_u64(const char *key, uint64_t v, bool last)
{
        printf("  \"%s\": %" PRIu64 "%s\n", key, v, last ? "" : ",");
}

static void json_field_str(const char *key, const char *v)
{
        printf("  \"%s\": ", key);
        cli_json_string(v);
        fputs(",\n", stdout);
}

static void print_json(const struct inspect_report *r)
{
        const struct cairn_manifest_stats *s = &r->stats;

        fputs("{\n", stdout);
        json_field_str("ref", r->ref);
        json_field_str("manifest", r->digest);
        json_field_u64("manifest_size", r->manifest_size, false);
        json_field_u64("files", s->files, false);
        json_field_u64("dirs", s->dirs, false);
        json_field_u64("symlinks", s->symlinks, false);
        json_field_u64("logical_bytes", s->logical_bytes, false);
        json_field_u64("chunk_refs", s->chunk_refs, false);
        json_field_u64("unique_chunks", s->unique_chunks, false);
        json_field_u64("unique_bytes", s->unique_bytes, false);
        json_field_u64("stored_bytes", s->stored_bytes, false);
        json_field_u64("blobs", s->blobs, false);
        json_field_u64("blob_bytes", s->blob_bytes, false);
        json_field_u64("chunk_min", r->chunk_min, false);
        json_field_u64("chunk_avg", r->chunk_avg, false);
        json_field_u64("chunk_max", r->chunk_max, !r->has_base);
        if (r->has_base) {
                json_field_str("base", r->base_ref);
                json_field_str("base_manifest", r->base_digest);
                json_field_u64("base_shared_chunks", s->base_shared_chunks, false);
                json_field_u64("base_shared_bytes", s->base_shared_bytes, false);
                json_field_u64("new_chunks", r->new_chunks, false);
                json_field_u64("new_bytes", r->new_bytes, true);
        }
        fputs("}\n", stdout);
}

static void print_human(const struct inspect_report *r)
{
        const struct cairn_manifest_stats *s = &r->stats;
        char a[64], b[64], c[64];

        printf("ref:             %s\n", r->ref);
        printf("manifest:        %s\n", r->digest);
        printf("manifest size:   %s\n", cli_format_size_exact(r->manifest_size, a, sizeof(a)));
        printf("files:           %" PRIu64 "\n", s->files);
        printf("directories:     %" PRIu64 "\n", s->dirs);
        printf("symlinks:        %" PRIu64 "\n", s->symlinks);
        printf("logical size:    %s\n", cli_format_size_exact(s->logical_bytes, a, sizeof(a)));
        printf("chunk refs:      %" PRIu64 "\n", s->chunk_refs);
        printf("unique chunks:   %" PRIu64 "\n", s->unique_chunks);
        printf("unique bytes:    %s\n", cli_format_size_exact(s->unique_bytes, a, sizeof(a)));
        printf("stored bytes:    %s", cli_format_size_exact(s->stored_bytes, a, sizeof(a)));
        if (s->stored_bytes > 0)
                printf(", compression ratio %.2f\n",
                       (double)s->unique_bytes / (double)s->stored_bytes);
        else
                putchar('\n');
        printf("blobs:           %" PRIu64 ", %s\n", s->blobs, cli_format_size_exact(s->blob_bytes, a, sizeof(a)));
        cli_format_size(r->chunk_min, a, sizeof(a));
        cli_format_size(r->chunk_avg, b, sizeof(b));
        cli_format_size(r->chunk_max, c, sizeof(c));
        printf("chunking:        min %s, avg %s, max %s\n", a, b, c);
        if (!r->has_base)
                return;
        printf("base:            %s (%s)\n", r->base_ref, r->base_digest);
        printf("shared chunks:   %" PRIu64 " of %" PRIu64 "\n", s->base_shared_chunks,
               s->unique_chunks);
        printf("shared bytes:    %s stored\n", cli_format_size_exact(s->base_shared_bytes, a, sizeof(a)));
        printf("new chunks:      %" PRIu64 "\n", r->new_chunks);
        printf("new bytes:       %s stored\n", cli_format_size_exact(r->new_bytes, a, sizeof(a)));
}

static void describe_volume(const struct cairn_volume *vol, const struct cairn_ref *ref,
                            char *ret_ref, char *ret_digest)
{
        if (cairn_ref_format(ref, ret_ref, REF_STR_SIZE) < 0)
                snprintf(ret_ref, REF_STR_SIZE, "%s", ref->name);
        cairn_digest_to_string(cairn_volume_digest(vol), ret_digest);
}

static int inspect_run(int argc, char **argv)
{
        enum { OPT_JSON = 0x100 };
        static const struct option options[] = {
            {"store", required_argument, NULL, 's'},
            {"base", required_argument, NULL, 'b'},
            {"json", no_argument, NULL, OPT_JSON},
            {"help", no_argument, NULL, 'h'},
            CLI_STORE_LONG_OPTIONS,
            {},
        };
        const char *store_url = NULL, *base_arg = NULL;
        struct cli_store_args store_args;
        struct cairn_volume *vol = NULL, *base_vol = NULL;
        const struct cairn_manifest *m, *base_m = NULL;
        struct cairn_store *store = NULL;
        struct cairn_ref ref, base_ref;
        struct inspect_report rep = {};
        bool json = false;
        int c, r, ret = CLI_EXIT_FAILURE;

        cli_store_args_init(&store_args);
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":s:b:h", options, NULL)) != -1) {
                switch (c) {
                case 's':
                        store_url = optarg;
                        break;
                case 'b':
                        base_arg = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        inspect_help(stdout);
                        return CLI_EXIT_OK;
                default:
                        r = cli_store_option_or_fail(&store_args, c, optarg, argv);
                        if (r)
                                return r;
                        break;
                }
        }
        if (optind >= argc)
                return cli_usage_error("missing REF");
        if (argc - optind > 1)
                return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);
        if (!store_url)
                return cli_usage_error("missing --store STORE");
        if (cli_parse_ref(argv[optind], &ref) < 0)
                return CLI_EXIT_USAGE;
        if (base_arg && cli_parse_ref(base_arg, &base_ref) < 0)
                return CLI_EXIT_USAGE;
        if (cli_store_check(store_url, &store_args) < 0)
                return CLI_EXIT_USAGE;

        if (cli_open_store(store_url, &store_args, false, &store) < 0)
                goto out;
        if (cli_open_volume(store, &ref, &store_args, &vol) < 0)
                goto out;
        if (base_arg) {
                if (cli_open_volume(store, &base_ref, &store_args, &base_vol) < 0)
                        goto out;
                base_m = cairn_volume_manifest(base_vol);
        }
        m = cairn_volume_manifest(vol);

        r = cairn_manifest_stats(m, base_m, &rep.stats);
        if (r < 0) {
                cli_error("cannot compute the figures of '%s': %s", argv[optind], strerror(-r));
                goto out;
        }
        describe_volume(vol, &ref, rep.ref, rep.digest);
        rep.manifest_size = m->size;
        rep.chunk_min = m->hdr->chunk_min;
        rep.chunk_avg = m->hdr->chunk_avg;
        rep.chunk_max = m->hdr->chunk_max;
        if (base_vol) {
                rep.has_base = true;
                describe_volume(base_vol, &base_ref, rep.base_ref, rep.base_digest);
                rep.new_chunks = rep.stats.unique_chunks > rep.stats.base_shared_chunks
                                     ? rep.stats.unique_chunks - rep.stats.base_shared_chunks
                                     : 0;
                rep.new_bytes = rep.stats.stored_bytes > rep.stats.base_shared_bytes
                                    ? rep.stats.stored_bytes - rep.stats.base_shared_bytes
                                    : 0;
        }

        if (json)
                print_json(&rep);
        else
                print_human(&rep);
        ret = CLI_EXIT_OK;
out:
        cairn_volume_free(base_vol);
        cairn_volume_free(vol);
        cairn_store_free(store);
        return ret;
}

const struct cli_command cli_cmd_inspect = {
    .name = "inspect",
    .summary = "Show what a volume holds and how it is stored",
    .run = inspect_run,
    .help = inspect_help,
};
