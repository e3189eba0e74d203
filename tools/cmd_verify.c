/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn verify --store STORE REF`: proves that the store can serve every
 * byte of a volume, by fetching each distinct stored chunk straight from
 * the store (no cache), decompressing it and checking its SHA-256, and by
 * checking that every pack blob exists with the size the manifest records.
 *
 * Chunks are verified in pack order (sorted by blob and offset), spread
 * over worker threads.  A bad chunk is reported per file that uses it,
 * with its path, chunk number and file offset, because "chunk 4711 is
 * bad" tells an operator nothing about which model shard to rebuild.  The
 * chunk -> files mapping is only built when something failed, so a clean
 * run costs O(chunks) memory and no path strings.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/manifest.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#include "cli_util.h"

static void verify_help(FILE *out)
{
        fputs("Usage: cairn verify --store STORE REF [OPTIONS]\n"
              "\n"
              "Fetches every distinct chunk of the volume REF from the store, bypassing\n"
              "all caches, decompresses it and checks its SHA-256; also checks that\n"
              "every pack blob exists with the recorded size.  Each file affected by a\n"
              "bad chunk is named on stderr; a summary line goes to stdout.\n"
              "\n"
              "Options:\n"
              "  -s, --store STORE   Store holding the volume\n"
              "  -j, --threads N     Parallel fetches (default: one per CPU)\n"
              "  -h, --help          Show this help\n"
              "\n",
              out);
        cli_store_help(out);
        fputs("\n"
              "Exit status: 0 everything verified, 1 failure or damage found,\n"
              "2 usage error.\n",
              out);
}

/* Memory for the workers' chunk buffers together. */
#define VERIFY_BUFFERS_MAX (1024ull * 1024 * 1024)

/* Blob states found by the size check. */
enum {
        BLOB_OK = 0,
        BLOB_MISSING,
        BLOB_SIZE_MISMATCH,
        BLOB_UNREADABLE,
};

struct verify_ctx {
        struct cairn_volume *vol;
        const uint64_t *reps; /* a chunk-table index per distinct stored chunk */
        uint64_t n_distinct;
        int *results;      /* per distinct chunk: 0 or -errno; each written by one worker */
        uint64_t next;     /* next distinct chunk to claim; atomic */
        uint64_t done;     /* distinct chunks finished; atomic, for progress */
        unsigned finished; /* workers that have returned; atomic */
        size_t buf_size;
};

struct verify_worker {
        struct verify_ctx *ctx;
        pthread_t thread;
        void *buf;
};

/* Chunk-table entries that name the same stored bytes are verified once. */
static int chunk_cmp(const void *a, const void *b, void *userdata)
{
        const struct cairn_manifest *m = userdata;
        const struct cairn_manifest_chunk *x = &m->chunks[*(const uint64_t *)a];
        const struct cairn_manifest_chunk *y = &m->chunks[*(const uint64_t *)b];

        if (x->blob != y->blob)
                return x->blob < y->blob ? -1 : 1;
        if (x->blob_offset != y->blob_offset)
                return x->blob_offset < y->blob_offset ? -1 : 1;
        if (x->stored_size != y->stored_size)
                return x->stored_size < y->stored_size ? -1 : 1;
        if (x->size != y->size)
                return x->size < y->size ? -1 : 1;
        if (x->flags != y->flags)
                return x->flags < y->flags ? -1 : 1;
        return memcmp(x->id.bytes, y->id.bytes, sizeof(x->id.bytes));
}

/*
 * Groups the chunk table into distinct stored chunks.  ret_group maps each
 * chunk-table index to its group; ret_reps lists one chunk per group, in
 * pack order.
 */
static int group_chunks(const struct cairn_manifest *m, uint64_t **ret_group, uint64_t **ret_reps,
                        uint64_t *ret_n_distinct)
{
        uint64_t n = m->hdr->chunk_count, n_distinct = 0;
        uint64_t *order, *group;

        if (n == 0) {
                *ret_group = NULL;
                *ret_reps = NULL;
                *ret_n_distinct = 0;
                return 0;
        }
        if (n > SIZE_MAX / sizeof(uint64_t))
                return -ENOMEM;
        order = malloc(n * sizeof(*order));
        group = malloc(n * sizeof(*group));
        if (!order || !group) {
                free(order);
                free(group);
                return -ENOMEM;
        }
        for (uint64_t i = 0; i < n; i++)
                order[i] = i;
        qsort_r(order, n, sizeof(*order), chunk_cmp, (void *)m);

        /*
         * Compact the sorted order in place into one representative per
         * group: slot n_distinct - 1 always holds the current group's.
         */
        for (uint64_t i = 0; i < n; i++) {
                uint64_t c = order[i];

                if (n_distinct == 0 || chunk_cmp(&c, &order[n_distinct - 1], (void *)m) != 0)
                        order[n_distinct++] = c;
                group[c] = n_distinct - 1;
        }
        *ret_group = group;
        *ret_reps = order;
        *ret_n_distinct = n_distinct;
        return 0;
}

static void *verify_worker_main(void *userdata)
{
        struct verify_worker *w = userdata;
        struct verify_ctx *ctx = w->ctx;

        for (;;) {
                uint64_t g = __atomic_fetch_add(&ctx->next, 1, __ATOMIC_RELAXED);

                if (g >= ctx->n_distinct)
                        break;
                ctx->results[g] = cairn_volume_fetch_chunk(ctx->vol, ctx->reps[g], w->buf);
                __atomic_fetch_add(&ctx->done, 1, __ATOMIC_RELEASE);
        }
        __atomic_fetch_add(&ctx->finished, 1, __ATOMIC_RELEASE);
        return NULL;
}

static void progress(const struct verify_ctx *ctx)
{
        uint64_t done = __atomic_load_n(&ctx->done, __ATOMIC_ACQUIRE);

        fprintf(stderr, "\rverifying: %" PRIu64 "/%" PRIu64 " chunks\033[K", done, ctx->n_distinct);
}

/* Runs the workers; the calling thread reports progress when stderr is a terminal. */
static int run_workers(struct verify_ctx *ctx, unsigned threads)
{
        struct verify_worker *workers;
        unsigned started = 0;
        bool tty = isatty(STDERR_FILENO);
        int r = 0;

        workers = calloc(threads, sizeof(*workers));
        if (!workers)
                return -ENOMEM;
        for (unsigned i = 0; i < threads; i++) {
                workers[i].ctx = ctx;
                workers[i].buf = malloc(ctx->buf_size > 0 ? ctx->buf_size : 1);
                if (!workers[i].buf) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        for (; started < threads; started++) {
                r = -pthread_create(&workers[started].thread, NULL, verify_worker_main,
                                    &workers[started]);
                if (r < 0)
                        break;
        }
        if (started == 0)
                goto out;
        r = 0;
        while (tty && __atomic_load_n(&ctx->finished, __ATOMIC_ACQUIRE) < started) {
                struct timespec ts = {.tv_nsec = 200 * 1000 * 1000};

                progress(ctx);
                nanosleep(&ts, NULL);
        }
        for (unsigned i = 0; i < started; i++)
                pthread_join(workers[i].thread, NULL);
        if (tty)
                fputs("\r\033[K", stderr);
out:
        for (unsigned i = 0; i < threads; i++)
                free(workers[i].buf);
        free(workers);
        return r;
}

static int check_blobs(struct cairn_store *store, const struct cairn_manifest *m,
                       uint8_t *blob_state)
{
        char d[CAIRN_DIGEST_STR_SIZE];
        int bad = 0;

        for (uint32_t b = 0; b < m->hdr->blob_count; b++) {
                const struct cairn_manifest_blob *blob = &m->blobs[b];
                uint64_t size;
                int r;

                r = cairn_store_blob_size(store, &blob->digest, &size);
                cairn_digest_to_string(&blob->digest, d);
                if (r == -ENOENT) {
                        blob_state[b] = BLOB_MISSING;
                        cli_error("blob '%s' is missing from the store", d);
                } else if (r < 0) {
                        blob_state[b] = BLOB_UNREADABLE;
                        cli_error("cannot stat blob '%s': %s", d, strerror(-r));
                } else if (size != blob->size) {
                        blob_state[b] = BLOB_SIZE_MISMATCH;
                        cli_error("blob '%s' has %" PRIu64 " bytes, the manifest records %" PRIu64,
                                  d, size, blob->size);
                } else {
                        continue;
                }
                bad++;
        }
        return bad;
}

static const char *chunk_reason(int err, uint8_t blob_state)
{
        switch (blob_state) {
        case BLOB_MISSING:
                return "its pack blob is missing";
        case BLOB_SIZE_MISMATCH:
                if (err == -EIO)
                        return "its pack blob has the wrong size";
                break;
        default:
                break;
        }
        if (err == -EIO)
                return "bad data: does not decompress or does not match its SHA-256";
        return strerror(-err);
}

/* "dir/sub/file" for inode ino; dirent_of maps an inode to the dirent naming it. */
static char *inode_path(const struct cairn_manifest *m, const uint64_t *dirent_of, uint32_t ino)
{
        size_t len = 0;
        char *path, *p;

        for (uint32_t x = ino; x != 0; x = m->inodes[x].parent)
                len += m->dirents[dirent_of[x]].name_len + 1;
        path = malloc(len > 0 ? len : 1);
        if (!path)
                return NULL;
        p = path + (len > 0 ? len - 1 : 0);
        *p = '\0';
        for (uint32_t x = ino; x != 0; x = m->inodes[x].parent) {
                const struct cairn_manifest_dirent *d = &m->dirents[dirent_of[x]];

                p -= d->name_len;
                memcpy(p, cairn_manifest_string(m, d->name_offset), d->name_len);
                if (p > path)
                        *--p = '/';
        }
        return path;
}

/*
 * Names every file that uses a bad chunk.  Returns the number of such
 * files, or -ENOMEM.
 */
static int64_t report_files(const struct cairn_manifest *m, const uint64_t *group,
                            const int *results, const uint8_t *blob_state)
{
        uint32_t n_inodes = cairn_manifest_inode_count(m);
        uint64_t *dirent_of;
        int64_t files = 0;

        dirent_of = calloc(n_inodes, sizeof(*dirent_of));
        if (!dirent_of)
                return -ENOMEM;
        for (uint32_t d = 0; d < n_inodes; d++) {
                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, d);

                if (!S_ISDIR(in->mode))
                        continue;
                for (uint64_t k = in->first; k < in->first + in->count; k++)
                        dirent_of[m->dirents[k].inode] = k;
        }

        for (uint32_t ino = 0; ino < n_inodes; ino++) {
                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
                char *path = NULL, *shown = NULL;
                bool affected = false;

                if (!S_ISREG(in->mode))
                        continue;
                for (uint64_t k = in->first; k < in->first + in->count; k++) {
                        const struct cairn_manifest_chunk *ch = &m->chunks[k];
                        int err = results[group[k]];

                        if (err == 0)
                                continue;
                        if (!shown) {
                                path = inode_path(m, dirent_of, ino);
                                if (!path || cli_escape(path, &shown) < 0) {
                                        free(path);
                                        free(dirent_of);
                                        return -ENOMEM;
                                }
                        }
                        cli_error("'%s': chunk %" PRIu64 " at offset %" PRIu64 " %s (%s)", shown,
                                  k - in->first, ch->file_offset,
                                  err == -EIO && blob_state[ch->blob] != BLOB_MISSING
                                      ? "is corrupt"
                                      : "cannot be read",
                                  chunk_reason(err, blob_state[ch->blob]));
                        affected = true;
                }
                if (affected)
                        files++;
                free(path);
                free(shown);
        }
        free(dirent_of);
        return files;
}

static int verify_run(int argc, char **argv)
{
        static const struct option options[] = {
            {"store", required_argument, NULL, 's'},
            {"threads", required_argument, NULL, 'j'},
            {"help", no_argument, NULL, 'h'},
            CLI_STORE_LONG_OPTIONS,
            {},
        };
        struct cli_store_args store_args;
        struct verify_ctx ctx = {};
        const struct cairn_manifest *m;
        struct cairn_volume *vol = NULL;
        struct cairn_store *store = NULL;
        struct cairn_ref ref;
        const char *store_url = NULL;
        uint64_t *group = NULL, *reps = NULL, v, bytes = 0, bad_chunks = 0;
        uint8_t *blob_state = NULL;
        unsigned threads = 0;
        int64_t bad_files = 0;
        int c, r, bad_blobs, ret = CLI_EXIT_FAILURE;

        cli_store_args_init(&store_args);
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":s:j:h", options, NULL)) != -1) {
                switch (c) {
                case 's':
                        store_url = optarg;
                        break;
                case 'j':
                        if (cli_parse_uint(optarg, 0, 1024, &v) < 0)
                                return cli_usage_error("invalid --threads '%s': expected 0..1024",
                                                       optarg);
                        threads = (unsigned)v;
                        break;
                case 'h':
                        verify_help(stdout);
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
        if (cli_store_check(store_url, &store_args) < 0)
                return CLI_EXIT_USAGE;

        if (cli_open_store(store_url, &store_args, false, &store) < 0)
                goto out;
        if (cli_open_volume(store, &ref, &store_args, &vol) < 0)
                goto out;
        m = cairn_volume_manifest(vol);

        blob_state = calloc(m->hdr->blob_count > 0 ? m->hdr->blob_count : 1, 1);
        if (!blob_state) {
                cli_error("out of memory");
                goto out;
        }
        bad_blobs = check_blobs(store, m, blob_state);

        r = group_chunks(m, &group, &reps, &ctx.n_distinct);
        if (r < 0) {
                cli_error("cannot index %" PRIu64 " chunks: %s", m->hdr->chunk_count, strerror(-r));
                goto out;
        }
        ctx.vol = vol;
        ctx.reps = reps;
        for (uint64_t g = 0; g < ctx.n_distinct; g++) {
                const struct cairn_manifest_chunk *ch = &m->chunks[reps[g]];

                bytes += ch->size;
                if (ch->size > ctx.buf_size)
                        ctx.buf_size = ch->size;
        }
        ctx.results = calloc(ctx.n_distinct > 0 ? ctx.n_distinct : 1, sizeof(*ctx.results));
        if (!ctx.results) {
                cli_error("out of memory");
                goto out;
        }

        if (threads == 0)
                threads = cli_cpu_count();
        /* Each worker holds one decoded chunk: keep the total within VERIFY_BUFFERS_MAX. */
        if (ctx.buf_size > 0 && threads > VERIFY_BUFFERS_MAX / ctx.buf_size)
                threads = (unsigned)(VERIFY_BUFFERS_MAX / ctx.buf_size) ?: 1;
        if (threads > ctx.n_distinct)
                threads = ctx.n_distinct > 0 ? (unsigned)ctx.n_distinct : 1;
        r = run_workers(&ctx, threads);
        if (r < 0) {
                cli_error("cannot start %u verify threads: %s", threads, strerror(-r));
                goto out;
        }

        for (uint64_t g = 0; g < ctx.n_distinct; g++)
                if (ctx.results[g] != 0)
                        bad_chunks++;
        if (bad_chunks > 0) {
                bad_files = report_files(m, group, ctx.results, blob_state);
                if (bad_files < 0) {
                        cli_error("out of memory while naming the damaged files");
                        goto out;
                }
        }

        printf("verified %" PRIu64 " chunks, %" PRIu64 " bytes: ", ctx.n_distinct, bytes);
        if (bad_chunks == 0 && bad_blobs == 0) {
                printf("ok\n");
                ret = CLI_EXIT_OK;
                goto out;
        }
        if (bad_chunks > 0)
                printf("%" PRIu64 " bad chunk%s in %" PRId64 " file%s", bad_chunks,
                       bad_chunks == 1 ? "" : "s", bad_files, bad_files == 1 ? "" : "s");
        if (bad_blobs > 0)
                printf("%s%d bad blob%s", bad_chunks > 0 ? ", " : "", bad_blobs,
                       bad_blobs == 1 ? "" : "s");
        putchar('\n');
out:
        free(ctx.results);
        free(group);
        free(reps);
        free(blob_state);
        cairn_volume_free(vol);
        cairn_store_free(store);
        return ret;
}

const struct cli_command cli_cmd_verify = {
    .name = "verify",
    .summary = "Fetch and verify every chunk of a volume",
    .run = verify_run,
    .help = verify_help,
};
