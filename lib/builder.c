/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cairn build: directory tree -> packs + manifest + ref.
 *
 * The walk is breadth-first with entries sorted by name, so every parent
 * gets a smaller inode index than its children (the validator relies on
 * that for acyclicity) and the same tree always gives the same manifest.
 *
 * File data flows through an ordered pipeline: the calling thread reads
 * and cuts chunks into a ring of slots; worker threads hash and compress
 * slots in any order; the calling thread retires slots strictly in order,
 * appending new chunks to the current pack and recording every chunk
 * reference.  Retiring in order keeps a file's new chunks contiguous in
 * one pack and the result deterministic whatever the thread count.
 *
 * Dedup: a table of chunk id -> stored location, seeded from the tag's
 * previous manifest and from --base, grows with every new chunk; a chunk
 * found there is referenced, not written again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "cairn/builder.h"
#include "cairn/log.h"
#include "cairn/manifest.h"
#include "cairn/profile.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

/* A blob the new manifest may reference: a pack written now or one of the bases'. */
struct build_blob {
        struct cairn_digest digest;
        uint64_t size;
        bool referenced;  /* goes into the manifest's blob table */
        bool created;     /* written by this build: removed if the build fails */
};

/* Where a chunk's stored bytes are. */
struct chunk_loc {
        struct cairn_digest id;
        uint64_t blob_offset;
        uint32_t blob;    /* index into build->blobs */
        uint32_t stored_size;
        uint32_t size;
        uint32_t flags;
        bool used;        /* slot in use (open addressing) */
};

enum slot_state { SLOT_FREE, SLOT_PENDING, SLOT_WORKING, SLOT_DONE };

struct slot {
        enum slot_state state; /* protected by build->lock */
        uint8_t *data;
        uint32_t len;
        uint8_t *comp;         /* compressed bytes, valid when compressed */
        size_t comp_cap;
        uint32_t comp_len;
        bool compressed;
        bool known;            /* found in the dedup table by the worker */
        struct cairn_digest id;
};

/* A regular file found by the walk, processed after it. */
struct walk_file {
        uint32_t ino;
        char *path; /* relative to src_dir */
};

struct build {
        const struct cairn_build_options *opts;
        int src_fd;
        struct cairn_manifest_writer *mw;
        char *errbuf;
        size_t errlen;

        /* dedup table, protected by lock (workers read it) */
        struct chunk_loc *table;
        size_t table_cap, table_len;

        struct build_blob *blobs;
        size_t nblobs, blobs_cap;

        struct cairn_manifest_chunk *chunks; /* chunk refs in manifest order */
        size_t nchunks, chunks_cap;

        struct walk_file *files;
        size_t nfiles, files_cap;

        /* current pack */
        struct cairn_blob_writer *pack;
        uint32_t pack_blob; /* index in blobs, reserved when the pack opens */

        /* pipeline */
        pthread_mutex_t lock;
        pthread_cond_t work_cond; /* a slot became PENDING, or stopping */
        pthread_cond_t done_cond; /* a slot became DONE */
        struct slot *slots;
        size_t nslots;
        size_t head, tail;        /* produce at head, retire at tail; protected by lock */
        size_t next_work;         /* next slot to hand to a worker; protected by lock */
        bool stopping;            /* protected by lock */
        pthread_t *threads;
        unsigned nthreads;
        int worker_error;         /* protected by lock */

        /* the file being processed by the retiring side */
        uint32_t cur_ino;
        uint64_t cur_offset;

        struct cairn_build_result result;
        uint64_t total_file_bytes;
        struct timespec started, last_progress;
};

static int fail(struct build *b, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct build *b, int r, const char *fmt, ...)
{
        /* Keep the first, most specific reason. */
        if (b->errbuf && b->errlen && !b->errbuf[0]) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(b->errbuf, b->errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
        if (need <= *cap)
                return 0;
        size_t n = *cap ? *cap : 64;
        while (n < need)
                n *= 2;
        void *p = realloc(*arr, n * elem);
        if (!p)
                return -ENOMEM;
        *arr = p;
        *cap = n;
        return 0;
}

void cairn_build_options_init(struct cairn_build_options *opts)
{
        memset(opts, 0, sizeof(*opts));
        cairn_chunker_params_default(&opts->chunking);
        opts->compression_level = CAIRN_COMPRESSION_LEVEL_DEFAULT;
        opts->pack_max = CAIRN_PACK_MAX_DEFAULT;
}

/* ---- dedup table ---- */

static size_t table_slot(const struct build *b, const struct cairn_digest *id)
{
        uint64_t h;
        memcpy(&h, id->bytes, sizeof(h));
        return (size_t)(h & (b->table_cap - 1));
}

/* Called with lock held (or before workers start). */
static const struct chunk_loc *table_find(const struct build *b, const struct cairn_digest *id)
{
        if (!b->table_cap)
                return NULL;
        for (size_t i = table_slot(b, id);; i = (i + 1) & (b->table_cap - 1)) {
                if (!b->table[i].used)
                        return NULL;
                if (cairn_digest_equal(&b->table[i].id, id))
                        return &b->table[i];
        }
}

static int table_insert(struct build *b, const struct chunk_loc *loc)
{
        if ((b->table_len + 1) * 4 > b->table_cap * 3) {
                size_t ncap = b->table_cap ? b->table_cap * 2 : 4096;
                struct chunk_loc *old = b->table;
                size_t ocap = b->table_cap;
                b->table = calloc(ncap, sizeof(*b->table));
                if (!b->table) {
                        b->table = old;
                        return -ENOMEM;
                }
                b->table_cap = ncap;
                for (size_t i = 0; i < ocap; i++) {
                        if (!old[i].used)
                                continue;
                        size_t j = table_slot(b, &old[i].id);
                        while (b->table[j].used)
                                j = (j + 1) & (ncap - 1);
                        b->table[j] = old[i];
                }
                free(old);
        }
        size_t i = table_slot(b, &loc->id);
        while (b->table[i].used) {
                if (cairn_digest_equal(&b->table[i].id, &loc->id))
                        return 0;
                i = (i + 1) & (b->table_cap - 1);
        }
        b->table[i] = *loc;
        b->table[i].used = true;
        b->table_len++;
        return 0;
}

static int blob_add(struct build *b, const struct cairn_digest *d, uint64_t size, uint32_t *ret)
{
        int r = grow((void **)&b->blobs, &b->blobs_cap, b->nblobs + 1, sizeof(*b->blobs));
        if (r < 0)
                return r;
        b->blobs[b->nblobs] = (struct build_blob){.size = size};
        if (d)
                b->blobs[b->nblobs].digest = *d;
        *ret = (uint32_t)b->nblobs++;
        return 0;
}

/* Seeds the dedup table with every chunk of an existing volume whose blob is still there. */
static int seed_from_volume(struct build *b, const struct cairn_ref *ref, bool required)
{
        struct cairn_volume *vol = NULL;
        char why[512] = "", refstr[512];
        int r;

        cairn_ref_format(ref, refstr, sizeof(refstr));
        r = cairn_volume_open(b->opts->store, ref, NULL, &vol, why, sizeof(why));
        if (r == -ENOENT && !required && !ref->by_digest)
                return 0; /* first build of this tag */
        if (r < 0)
                return fail(b, r, "cannot open base '%s': %s", refstr, why);

        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint32_t first = (uint32_t)b->nblobs;
        for (uint32_t i = 0; i < m->hdr->blob_count; i++) {
                uint64_t size;
                uint32_t idx;
                /* A blob that went missing is simply not reused. */
                if (cairn_store_blob_size(b->opts->store, &m->blobs[i].digest, &size) < 0 ||
                    size != m->blobs[i].size)
                        size = UINT64_MAX;
                r = blob_add(b, &m->blobs[i].digest, size, &idx);
                if (r < 0)
                        goto out;
        }
        for (uint64_t i = 0; i < m->hdr->chunk_count; i++) {
                const struct cairn_manifest_chunk *c = &m->chunks[i];
                if (b->blobs[first + c->blob].size == UINT64_MAX)
                        continue;
                struct chunk_loc loc = {
                        .id = c->id,
                        .blob_offset = c->blob_offset,
                        .blob = first + c->blob,
                        .stored_size = c->stored_size,
                        .size = c->size,
                        .flags = c->flags,
                };
                r = table_insert(b, &loc);
                if (r < 0)
                        goto out;
        }
        r = 0;
out:
        cairn_volume_free(vol);
        return r < 0 ? fail(b, r, "cannot load base '%s': %s", refstr, strerror(-r)) : 0;
}

/* ---- packs ---- */

static int pack_close(struct build *b)
{
        struct cairn_digest d;
        bool created = false;
        if (!b->pack)
                return 0;
        uint64_t size = cairn_blob_writer_size(b->pack);
        int r = cairn_blob_writer_commit(b->pack, &d, &created);
        cairn_blob_writer_free(b->pack);
        b->pack = NULL;
        if (r < 0)
                return fail(b, r, "cannot write pack: %s", strerror(-r));
        struct build_blob *blob = &b->blobs[b->pack_blob];
        blob->digest = d;
        blob->size = size;
        blob->created = created;
        b->result.packs_written++;
        if (created)
                b->result.new_pack_bytes += size;
        return 0;
}

static int pack_open(struct build *b)
{
        int r = cairn_store_blob_writer_new(b->opts->store, &b->pack);
        if (r < 0)
                return fail(b, r, "cannot create pack in store: %s", strerror(-r));
        r = blob_add(b, NULL, 0, &b->pack_blob);
        if (r < 0)
                return fail(b, r, "out of memory");
        b->blobs[b->pack_blob].referenced = true;
        return 0;
}

/* ---- pipeline ---- */

/*
 * Model weights and already-compressed data do not shrink, and trying to
 * compress a whole chunk of them costs a third of a core per GB/s.  Three
 * 16 KiB samples (start, middle, end) compressed at level 1 tell first: if
 * none shrinks by 3%, the chunk is stored raw without a full attempt.  A
 * chunk that would have shrunk by less than that is also stored raw; the
 * format allows either.
 */
#define PROBE_SAMPLE (16u * 1024)
#define PROBE_MIN_CHUNK (256u * 1024)

static bool probe_incompressible(ZSTD_CCtx *probe, uint8_t *scratch, const uint8_t *data,
                                 size_t len)
{
        if (!probe || len < PROBE_MIN_CHUNK)
                return false;
        const size_t at[3] = {0, len / 2 - PROBE_SAMPLE / 2, len - PROBE_SAMPLE};
        for (int i = 0; i < 3; i++) {
                size_t n = ZSTD_compressCCtx(probe, scratch, ZSTD_compressBound(PROBE_SAMPLE),
                                             data + at[i], PROBE_SAMPLE, 1);
                if (ZSTD_isError(n) || n * 100 < PROBE_SAMPLE * 97)
                        return false;
        }
        return true;
}

static void *worker_main(void *arg)
{
        struct build *b = arg;
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        ZSTD_CCtx *probe = ZSTD_createCCtx();
        if (cctx)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, b->opts->compression_level);

        pthread_mutex_lock(&b->lock);
        for (;;) {
                while (!b->stopping && (b->next_work == b->head ||
                                        b->slots[b->next_work % b->nslots].state != SLOT_PENDING))
                        pthread_cond_wait(&b->work_cond, &b->lock);
                if (b->stopping)
                        break;
                struct slot *s = &b->slots[b->next_work % b->nslots];
                b->next_work++;
                s->state = SLOT_WORKING;
                pthread_mutex_unlock(&b->lock);

                cairn_sha256(s->data, s->len, &s->id);
                pthread_mutex_lock(&b->lock);
                s->known = table_find(b, &s->id) != NULL;
                pthread_mutex_unlock(&b->lock);

                s->compressed = false;
                if (!s->known && cctx && !probe_incompressible(probe, s->comp, s->data, s->len)) {
                        size_t n = ZSTD_compress2(cctx, s->comp, s->comp_cap, s->data, s->len);
                        /* Stored raw unless compression actually shrinks the chunk. */
                        if (!ZSTD_isError(n) && n < s->len) {
                                s->compressed = true;
                                s->comp_len = (uint32_t)n;
                        }
                } else if (!cctx) {
                        pthread_mutex_lock(&b->lock);
                        b->worker_error = -ENOMEM;
                        pthread_mutex_unlock(&b->lock);
                }

                pthread_mutex_lock(&b->lock);
                s->state = SLOT_DONE;
                pthread_cond_broadcast(&b->done_cond);
        }
        pthread_mutex_unlock(&b->lock);
        ZSTD_freeCCtx(probe);
        ZSTD_freeCCtx(cctx);
        return NULL;
}

static void progress_show(struct build *b, bool final)
{
        struct timespec now;
        if (!b->opts->progress)
                return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double since = (double)(now.tv_sec - b->last_progress.tv_sec) +
                       (double)(now.tv_nsec - b->last_progress.tv_nsec) / 1e9;
        if (!final && since < 0.2)
                return;
        b->last_progress = now;
        double elapsed = (double)(now.tv_sec - b->started.tv_sec) +
                         (double)(now.tv_nsec - b->started.tv_nsec) / 1e9;
        double mib = (double)b->result.logical_bytes / (1024.0 * 1024.0);
        double total = (double)b->total_file_bytes / (1024.0 * 1024.0);
        fprintf(stderr, "\r\033[Kbuilding: %llu/%zu files, %.0f/%.0f MiB, %.0f MiB/s%s",
                (unsigned long long)b->result.files, b->nfiles, mib, total,
                elapsed > 0 ? mib / elapsed : 0.0, final ? "\n" : "");
}

/* Retires the oldest slot: records the chunk, appending it to the pack if new. */
static int slot_retire(struct build *b, struct slot *s)
{
        struct chunk_loc loc;
        const struct chunk_loc *found;
        int r;

        pthread_mutex_lock(&b->lock);
        found = table_find(b, &s->id);
        if (found)
                loc = *found;
        pthread_mutex_unlock(&b->lock);

        if (found) {
                b->blobs[loc.blob].referenced = true;
                b->result.reused_chunks++;
        } else {
                if (!b->pack) {
                        r = pack_open(b);
                        if (r < 0)
                                return r;
                }
                loc = (struct chunk_loc){
                        .id = s->id,
                        .blob_offset = cairn_blob_writer_size(b->pack),
                        .blob = b->pack_blob,
                        .stored_size = s->compressed ? s->comp_len : s->len,
                        .size = s->len,
                        .flags = s->compressed ? CAIRN_CHUNK_ZSTD : 0,
                };
                r = cairn_blob_writer_write(b->pack, s->compressed ? s->comp : s->data,
                                            loc.stored_size);
                if (r < 0)
                        return fail(b, r, "cannot write pack: %s", strerror(-r));
                pthread_mutex_lock(&b->lock);
                r = table_insert(b, &loc);
                pthread_mutex_unlock(&b->lock);
                if (r < 0)
                        return fail(b, r, "out of memory");
                b->result.new_chunks++;
        }
        r = grow((void **)&b->chunks, &b->chunks_cap, b->nchunks + 1, sizeof(*b->chunks));
        if (r < 0)
                return fail(b, r, "out of memory");
        b->chunks[b->nchunks++] = (struct cairn_manifest_chunk){
                .id = s->id,
                .file_offset = b->cur_offset,
                .blob_offset = loc.blob_offset,
                .blob = loc.blob, /* remapped to manifest indexes at the end */
                .stored_size = loc.stored_size,
                .size = s->len,
                .flags = loc.flags,
        };
        b->cur_offset += s->len;
        b->result.chunks++;
        b->result.logical_bytes += s->len;
        progress_show(b, false);
        return 0;
}

/* Retires slots in order until at most keep remain in flight. */
static int pipeline_drain(struct build *b, size_t keep)
{
        for (;;) {
                pthread_mutex_lock(&b->lock);
                if (b->head - b->tail <= keep) {
                        pthread_mutex_unlock(&b->lock);
                        return 0;
                }
                struct slot *s = &b->slots[b->tail % b->nslots];
                while (s->state != SLOT_DONE)
                        pthread_cond_wait(&b->done_cond, &b->lock);
                int werr = b->worker_error;
                pthread_mutex_unlock(&b->lock);
                if (werr < 0)
                        return fail(b, werr, "out of memory in compression worker");
                int r = slot_retire(b, s);
                pthread_mutex_lock(&b->lock);
                s->state = SLOT_FREE;
                b->tail++;
                pthread_mutex_unlock(&b->lock);
                if (r < 0)
                        return r;
        }
}

static int pipeline_submit(struct build *b, const uint8_t *data, size_t len)
{
        int r = pipeline_drain(b, b->nslots - 1);
        if (r < 0)
                return r;
        struct slot *s = &b->slots[b->head % b->nslots];
        memcpy(s->data, data, len);
        s->len = (uint32_t)len;
        pthread_mutex_lock(&b->lock);
        s->state = SLOT_PENDING;
        b->head++;
        pthread_cond_signal(&b->work_cond);
        pthread_mutex_unlock(&b->lock);
        return 0;
}

static int pipeline_start(struct build *b)
{
        unsigned n = b->opts->threads;
        if (n == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                n = cpus > 0 ? (unsigned)cpus : 1;
        }
        if (n > 64)
                n = 64;
        b->nslots = 2 * (size_t)n + 2;
        b->slots = calloc(b->nslots, sizeof(*b->slots));
        b->threads = calloc(n, sizeof(*b->threads));
        if (!b->slots || !b->threads)
                return fail(b, -ENOMEM, "out of memory");
        size_t max = b->opts->chunking.max_size;
        for (size_t i = 0; i < b->nslots; i++) {
                b->slots[i].data = malloc(max);
                b->slots[i].comp_cap = ZSTD_compressBound(max);
                b->slots[i].comp = malloc(b->slots[i].comp_cap);
                if (!b->slots[i].data || !b->slots[i].comp)
                        return fail(b, -ENOMEM, "out of memory");
        }
        for (unsigned i = 0; i < n; i++) {
                int r = pthread_create(&b->threads[i], NULL, worker_main, b);
                if (r != 0)
                        return fail(b, -r, "cannot start worker thread: %s", strerror(r));
                b->nthreads++;
        }
        return 0;
}

static void pipeline_stop(struct build *b)
{
        pthread_mutex_lock(&b->lock);
        b->stopping = true;
        pthread_cond_broadcast(&b->work_cond);
        pthread_mutex_unlock(&b->lock);
        for (unsigned i = 0; i < b->nthreads; i++)
                pthread_join(b->threads[i], NULL);
        b->nthreads = 0;
        if (b->slots)
                for (size_t i = 0; i < b->nslots; i++) {
                        free(b->slots[i].data);
                        free(b->slots[i].comp);
                }
        free(b->slots);
        b->slots = NULL;
        free(b->threads);
        b->threads = NULL;
}

/* ---- files ---- */

static int read_full(int fd, uint8_t *buf, size_t len, size_t *ret_n)
{
        size_t got = 0;
        while (got < len) {
                ssize_t n = read(fd, buf + got, len - got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                got += (size_t)n;
        }
        *ret_n = got;
        return 0;
}

static int process_file(struct build *b, const struct walk_file *f, uint8_t *buf, size_t cap)
{
        const struct cairn_chunker_params *p = &b->opts->chunking;
        int r;

        /* Chunks retire in order, so every earlier file is fully recorded first. */
        r = pipeline_drain(b, 0);
        if (r < 0)
                return r;
        if (b->pack && cairn_blob_writer_size(b->pack) >= b->opts->pack_max) {
                r = pack_close(b);
                if (r < 0)
                        return r;
        }
        int fd = openat(b->src_fd, f->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return fail(b, -errno, "cannot open '%s': %s", f->path, strerror(errno));
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        b->cur_ino = f->ino;
        b->cur_offset = 0;
        uint64_t first_chunk = b->nchunks;
        size_t start = 0, end = 0;
        bool eof = false;
        for (;;) {
                if (!eof && end - start < p->max_size) {
                        memmove(buf, buf + start, end - start);
                        end -= start;
                        start = 0;
                        size_t n = 0;
                        r = read_full(fd, buf + end, cap - end, &n);
                        if (r < 0) {
                                fail(b, r, "cannot read '%s': %s", f->path, strerror(-r));
                                goto out;
                        }
                        end += n;
                        eof = end < cap;
                }
                if (end == start)
                        break;
                size_t n = cairn_chunker_next(p, buf + start, end - start, eof);
                r = pipeline_submit(b, buf + start, n);
                if (r < 0)
                        goto out;
                start += n;
        }
        r = pipeline_drain(b, 0);
        if (r < 0)
                goto out;
        struct cairn_manifest_inode *inode = cairn_manifest_writer_inode(b->mw, f->ino);
        inode->size = b->cur_offset;
        inode->first = inode->size ? first_chunk : 0;
        inode->count = b->nchunks - first_chunk;
        b->result.files++;
out:
        close(fd);
        return r;
}

/* ---- walk ---- */

struct walk_entry {
        char *name;
        struct stat st;
};

static int entry_cmp(const void *a, const void *b)
{
        return strcmp(((const struct walk_entry *)a)->name, ((const struct walk_entry *)b)->name);
}

static void skip_entry(struct build *b, const char *path, const char *why)
{
        b->result.skipped++;
        if (b->opts->on_skip)
                b->opts->on_skip(path, why, b->opts->userdata);
        else
                cairn_debug("skipping '%s': %s", path, why);
}

static int path_join(const char *dir, const char *name, char **ret)
{
        int n = *dir ? asprintf(ret, "%s/%s", dir, name) : asprintf(ret, "%s", name);
        return n < 0 ? -ENOMEM : 0;
}

static struct cairn_manifest_inode inode_from_stat(const struct stat *st, uint32_t parent)
{
        return (struct cairn_manifest_inode){
                .mode = st->st_mode & (S_IFMT | 07777),
                .uid = st->st_uid,
                .gid = st->st_gid,
                .nlink = 1,
                .mtime_sec = st->st_mtim.tv_sec,
                .mtime_nsec = (uint32_t)st->st_mtim.tv_nsec,
                .parent = parent,
        };
}

/* Lists one directory into sorted entries (caller frees). */
static int list_dir(struct build *b, const char *path, struct walk_entry **ret, size_t *ret_n)
{
        struct walk_entry *ents = NULL;
        size_t n = 0, cap = 0;
        int r = 0;

        int fd = openat(b->src_fd, *path ? path : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC |
                                                        O_NOFOLLOW);
        if (fd < 0)
                return fail(b, -errno, "cannot open directory '%s': %s", *path ? path : ".",
                            strerror(errno));
        DIR *d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return fail(b, r, "cannot read directory '%s': %s", path, strerror(-r));
        }
        for (;;) {
                errno = 0;
                struct dirent *de = readdir(d);
                if (!de) {
                        if (errno) {
                                r = fail(b, -errno, "cannot read directory '%s': %s", path,
                                         strerror(errno));
                                goto fail;
                        }
                        break;
                }
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                r = grow((void **)&ents, &cap, n + 1, sizeof(*ents));
                if (r < 0)
                        goto fail;
                ents[n].name = strdup(de->d_name);
                if (!ents[n].name) {
                        r = -ENOMEM;
                        goto fail;
                }
                if (fstatat(dirfd(d), de->d_name, &ents[n].st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        char *p = NULL;
                        path_join(path, de->d_name, &p);
                        fail(b, r, "cannot stat '%s': %s", p ? p : de->d_name, strerror(-r));
                        free(p);
                        n++;
                        goto fail;
                }
                n++;
        }
        closedir(d);
        /* An empty directory leaves ents NULL, which qsort() must not be given. */
        if (n > 1)
                qsort(ents, n, sizeof(*ents), entry_cmp);
        *ret = ents;
        *ret_n = n;
        return 0;
fail:
        closedir(d);
        for (size_t i = 0; i < n; i++)
                free(ents[i].name);
        free(ents);
        return r;
}

struct dir_todo {
        uint32_t ino;
        char *path;
};

static int walk(struct build *b)
{
        struct dir_todo *queue = NULL;
        size_t qhead = 0, qlen = 0, qcap = 0;
        struct stat st;
        uint32_t ino;
        int r;

        if (fstat(b->src_fd, &st) < 0)
                return fail(b, -errno, "cannot stat source: %s", strerror(errno));
        struct cairn_manifest_inode root = inode_from_stat(&st, 0);
        r = cairn_manifest_writer_add_inode(b->mw, &root, &ino);
        if (r < 0)
                return fail(b, r, "out of memory");
        r = grow((void **)&queue, &qcap, 1, sizeof(*queue));
        if (r < 0)
                return fail(b, r, "out of memory");
        queue[qlen++] = (struct dir_todo){0, strdup("")};
        b->result.dirs++;

        while (qhead < qlen) {
                struct dir_todo dir = queue[qhead++];
                struct walk_entry *ents = NULL;
                size_t n = 0, kept = 0, subdirs = 0;
                uint64_t first = cairn_manifest_writer_dirent_count(b->mw);

                r = dir.path ? list_dir(b, dir.path, &ents, &n) : -ENOMEM;
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        struct walk_entry *e = &ents[i];
                        char *path = NULL;
                        mode_t type = e->st.st_mode & S_IFMT;
                        r = path_join(dir.path, e->name, &path);
                        if (r < 0)
                                break;
                        if (type != S_IFDIR && type != S_IFREG && type != S_IFLNK) {
                                skip_entry(b, path, type == S_IFIFO    ? "a FIFO"
                                                    : type == S_IFSOCK ? "a socket"
                                                                       : "a device node");
                                free(path);
                                continue;
                        }
                        struct cairn_manifest_inode in = inode_from_stat(&e->st, dir.ino);
                        if (type == S_IFLNK) {
                                char target[CAIRN_SYMLINK_MAX + 2];
                                ssize_t len = readlinkat(b->src_fd, path, target, sizeof(target));
                                if (len < 0 || len > (ssize_t)CAIRN_SYMLINK_MAX) {
                                        r = fail(b, len < 0 ? -errno : -ENAMETOOLONG,
                                                 "cannot read symlink '%s': %s", path,
                                                 len < 0 ? strerror(errno) : "target too long");
                                        free(path);
                                        break;
                                }
                                r = cairn_manifest_writer_add_string(b->mw, target, (size_t)len,
                                                                     &in.first);
                                in.size = in.count = (uint64_t)len;
                                b->result.symlinks++;
                        }
                        if (r >= 0)
                                r = cairn_manifest_writer_add_inode(b->mw, &in, &ino);
                        uint64_t name_off = 0;
                        if (r >= 0)
                                r = cairn_manifest_writer_add_string(b->mw, e->name,
                                                                     strlen(e->name), &name_off);
                        if (r >= 0) {
                                struct cairn_manifest_dirent de = {
                                        .name_offset = name_off,
                                        .name_len = (uint32_t)strlen(e->name),
                                        .inode = ino,
                                };
                                r = cairn_manifest_writer_add_dirent(b->mw, &de, NULL);
                        }
                        if (r < 0) {
                                fail(b, r, "cannot add '%s' to the index: %s", path, strerror(-r));
                                free(path);
                                break;
                        }
                        kept++;
                        if (type == S_IFDIR) {
                                subdirs++;
                                b->result.dirs++;
                                r = grow((void **)&queue, &qcap, qlen + 1, sizeof(*queue));
                                if (r < 0) {
                                        free(path);
                                        break;
                                }
                                queue[qlen++] = (struct dir_todo){ino, path};
                                path = NULL;
                        } else if (type == S_IFREG) {
                                r = grow((void **)&b->files, &b->files_cap, b->nfiles + 1,
                                         sizeof(*b->files));
                                if (r < 0) {
                                        free(path);
                                        break;
                                }
                                b->files[b->nfiles++] = (struct walk_file){ino, path};
                                b->total_file_bytes += (uint64_t)e->st.st_size;
                                path = NULL;
                        }
                        free(path);
                }
                for (size_t i = 0; i < n; i++)
                        free(ents[i].name);
                free(ents);
                free(dir.path);
                if (r < 0) {
                        fail(b, r, "out of memory");
                        break;
                }
                struct cairn_manifest_inode *d = cairn_manifest_writer_inode(b->mw, dir.ino);
                d->first = kept ? first : 0;
                d->count = d->size = kept;
                d->nlink = (uint32_t)(2 + subdirs);
        }
        for (size_t i = qhead; i < qlen; i++)
                free(queue[i].path);
        free(queue);
        return r < 0 ? r : 0;
}

/* ---- the whole build ---- */

static int attach_profile(struct build *b, void **buf, size_t *size)
{
        struct cairn_profile profile = {0};
        struct cairn_manifest view;
        uint64_t *chunks = NULL;
        size_t n = 0;
        char why[256] = "";
        int r;

        r = cairn_profile_load(b->opts->profile_path, &profile, why, sizeof(why));
        if (r < 0)
                return fail(b, r, "cannot load profile: %s", why[0] ? why : strerror(-r));
        r = cairn_manifest_validate(*buf, *size, &view, why, sizeof(why));
        if (r >= 0)
                r = cairn_profile_resolve(&profile, &view, &chunks, &n);
        if (r >= 0)
                r = cairn_manifest_writer_set_profile(b->mw, chunks, n);
        if (r >= 0) {
                free(*buf);
                *buf = NULL;
                r = cairn_manifest_writer_finish(b->mw, buf, size, why, sizeof(why));
        }
        if (r < 0)
                fail(b, r, "cannot store the profile in the index: %s",
                     why[0] ? why : strerror(-r));
        b->result.profile_chunks = n;
        free(chunks);
        cairn_profile_release(&profile);
        return r;
}

static int finish_manifest(struct build *b)
{
        uint32_t *remap = NULL;
        void *buf = NULL;
        size_t size = 0;
        char why[256] = "";
        int r;

        remap = calloc(b->nblobs ? b->nblobs : 1, sizeof(*remap));
        if (!remap)
                return fail(b, -ENOMEM, "out of memory");
        for (size_t i = 0; i < b->nblobs; i++) {
                if (!b->blobs[i].referenced)
                        continue;
                r = cairn_manifest_writer_add_blob(b->mw, &b->blobs[i].digest, b->blobs[i].size,
                                                   &remap[i]);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < b->nchunks; i++) {
                b->chunks[i].blob = remap[b->chunks[i].blob];
                r = cairn_manifest_writer_add_chunk(b->mw, &b->chunks[i], NULL);
                if (r < 0)
                        goto out;
        }
        r = cairn_manifest_writer_finish(b->mw, &buf, &size, why, sizeof(why));
        if (r < 0) {
                fail(b, r, "cannot serialize the index: %s", why[0] ? why : strerror(-r));
                goto out;
        }
        if (b->opts->profile_path) {
                /* Chunk ids become indexes of this manifest's chunk table. */
                r = attach_profile(b, &buf, &size);
                if (r < 0)
                        goto out;
        }
        bool created;
        r = cairn_store_put_blob(b->opts->store, buf, size, &b->result.manifest, &created);
        if (r < 0) {
                fail(b, r, "cannot store the index: %s", strerror(-r));
                goto out;
        }
        b->result.manifest_size = size;
        r = cairn_store_write_ref(b->opts->store, b->opts->name, b->opts->tag, &b->result.manifest);
        if (r < 0) {
                fail(b, r, "cannot write ref '%s:%s': %s", b->opts->name, b->opts->tag,
                     r == -EISDIR || r == -ENOTDIR
                             ? "it collides with the refs of another volume name"
                             : strerror(-r));
                /* Nothing references the index now: leave the store as it was. */
                if (created)
                        cairn_store_remove_blob(b->opts->store, &b->result.manifest);
        }
out:
        if (r < 0 && !b->errbuf[0])
                fail(b, r, "cannot finish the index: %s", strerror(-r));
        free(buf);
        free(remap);
        return r;
}

int cairn_build(const struct cairn_build_options *opts, struct cairn_build_result *ret_result,
                char *errbuf, size_t errlen)
{
        char dummy[1];
        struct build b = {
                .opts = opts,
                .src_fd = -1,
                .errbuf = errbuf ? errbuf : dummy,
                .errlen = errbuf ? errlen : sizeof(dummy),
                .lock = PTHREAD_MUTEX_INITIALIZER,
                .work_cond = PTHREAD_COND_INITIALIZER,
                .done_cond = PTHREAD_COND_INITIALIZER,
        };
        uint8_t *buf = NULL;
        int r;

        b.errbuf[0] = '\0';
        clock_gettime(CLOCK_MONOTONIC, &b.started);
        b.last_progress = b.started;
        if (!cairn_ref_name_valid(opts->name) || !cairn_ref_tag_valid(opts->tag))
                return fail(&b, -EINVAL, "invalid tag '%s:%s'", opts->name, opts->tag);
        r = cairn_chunker_params_validate(&opts->chunking);
        if (r < 0)
                return fail(&b, r, "invalid chunk sizes (need %u <= min < avg < max <= %u, avg a "
                                   "power of two)",
                            CAIRN_CHUNK_MIN_LIMIT, CAIRN_CHUNK_MAX_LIMIT);
        if (opts->compression_level < 1 || opts->compression_level > ZSTD_maxCLevel())
                return fail(&b, -EINVAL, "invalid compression level %d (1..%d)",
                            opts->compression_level, ZSTD_maxCLevel());

        if (opts->profile_path) {
                /* Fail before the long part, not after it. */
                struct cairn_profile probe = {0};
                char why[256] = "";
                r = cairn_profile_load(opts->profile_path, &probe, why, sizeof(why));
                cairn_profile_release(&probe);
                if (r < 0)
                        return fail(&b, r, "cannot load profile: %s", why[0] ? why : strerror(-r));
        }
        b.src_fd = open(opts->src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b.src_fd < 0)
                return fail(&b, -errno, "cannot open '%s': %s", opts->src_dir, strerror(errno));
        r = cairn_manifest_writer_new(&opts->chunking, &b.mw);
        if (r < 0) {
                fail(&b, r, "out of memory");
                goto out;
        }

        /* Dedup sources: the tag's previous manifest, then --base. */
        struct cairn_ref prev = {0};
        snprintf(prev.name, sizeof(prev.name), "%s", opts->name);
        snprintf(prev.tag, sizeof(prev.tag), "%s", opts->tag);
        /*
         * A previous manifest that cannot be used (damaged, blobs gone) must not
         * block the rebuild that replaces it: build without its dedup instead.
         */
        r = seed_from_volume(&b, &prev, false);
        if (r == -ENOMEM)
                goto out;
        if (r < 0) {
                b.result.previous_unusable = true;
                b.errbuf[0] = '\0';
        }
        if (opts->base_ref) {
                struct cairn_ref base;
                if (cairn_ref_parse(opts->base_ref, &base) < 0) {
                        r = fail(&b, -EINVAL, "invalid base reference '%s'", opts->base_ref);
                        goto out;
                }
                r = seed_from_volume(&b, &base, true);
                if (r < 0)
                        goto out;
        }

        r = walk(&b);
        if (r < 0)
                goto out;
        size_t cap = 2 * (size_t)opts->chunking.max_size;
        if (cap < (16u << 20))
                cap = 16u << 20;
        buf = malloc(cap);
        if (!buf) {
                r = fail(&b, -ENOMEM, "out of memory");
                goto out;
        }
        r = pipeline_start(&b);
        for (size_t i = 0; r >= 0 && i < b.nfiles; i++)
                r = process_file(&b, &b.files[i], buf, cap);
        if (r >= 0)
                r = pipeline_drain(&b, 0);
        pipeline_stop(&b);
        if (r >= 0)
                r = pack_close(&b);
        if (r >= 0)
                r = finish_manifest(&b);
        progress_show(&b, true);
out:
        if (r < 0) {
                /* Leave the store as it was: drop the packs this build created. */
                cairn_blob_writer_free(b.pack);
                for (size_t i = 0; i < b.nblobs; i++)
                        if (b.blobs[i].created)
                                cairn_store_remove_blob(opts->store, &b.blobs[i].digest);
        } else if (ret_result) {
                *ret_result = b.result;
        }
        pipeline_stop(&b);
        for (size_t i = 0; i < b.nfiles; i++)
                free(b.files[i].path);
        free(b.files);
        free(b.chunks);
        free(b.blobs);
        free(b.table);
        free(buf);
        cairn_manifest_writer_free(b.mw);
        if (b.src_fd >= 0)
                close(b.src_fd);
        return r;
}
