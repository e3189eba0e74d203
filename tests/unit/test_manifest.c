/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifest tests: a writer -> validate -> read round trip over a small tree
 * that has every kind of node, then one test per class of malformed
 * manifest.  The malformed ones start from a valid serialized manifest and
 * change a few bytes in place, so each test hits exactly the rule it names
 * (the error message is checked for the rule's wording, not just -EINVAL).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "cairn/manifest.h"

/*
 * The sample tree, breadth first with siblings sorted (children always get
 * higher inode numbers than their parent):
 *
 *   0 /             dir
 *   1 a             dir
 *   2 empty         file, 0 bytes
 *   3 file          file, chunks 100 + 200 + 50
 *   4 link          symlink -> "a/b/deep"
 *   5 zz            file, chunk 10
 *   6 a/b           dir
 *   7 a/x           file, 1 byte
 *   8 a/b/deep      file, chunks 100 + 7 (its first chunk has the same id as file's first)
 *   9 a/b/sp ace é  symlink -> "/abs/target"
 */
struct node {
        const char *name;
        int parent;
        uint32_t mode;
        uint32_t chunks[4];
        int nchunks;
        const char *target;
};

static const struct node sample[] = {
    {"", 0, S_IFDIR | 0755, {0}, 0, NULL},
    {"a", 0, S_IFDIR | 0700, {0}, 0, NULL},
    {"empty", 0, S_IFREG | 0644, {0}, 0, NULL},
    {"file", 0, S_IFREG | 0755, {100, 200, 50}, 3, NULL},
    {"link", 0, S_IFLNK | 0777, {0}, 0, "a/b/deep"},
    {"zz", 0, S_IFREG | 0600, {10}, 1, NULL},
    {"b", 1, S_IFDIR | 0755, {0}, 0, NULL},
    {"x", 1, S_IFREG | 0644, {1}, 1, NULL},
    {"deep", 6, S_IFREG | 0644, {100, 7}, 2, NULL},
    {"sp ace \xc3\xa9", 6, S_IFLNK | 0777, {0}, 0, "/abs/target"},
};
#define N_SAMPLE (sizeof(sample) / sizeof(sample[0]))

enum {
        INO_ROOT = 0,
        INO_A = 1,
        INO_EMPTY = 2,
        INO_FILE = 3,
        INO_LINK = 4,
        INO_ZZ = 5,
        INO_B = 6,
        INO_X = 7,
        INO_DEEP = 8,
        INO_SPACE = 9,
};

/* A chunk id that depends only on (size, position in file): deep's chunk 0 repeats file's. */
static struct cairn_digest chunk_id(uint32_t size, int k)
{
        struct cairn_digest d;
        for (int i = 0; i < CAIRN_DIGEST_SIZE; i++)
                d.bytes[i] = (uint8_t)(0xc5 + i * 13);
        memcpy(d.bytes, &size, sizeof(size));
        d.bytes[4] = (uint8_t)k;
        return d;
}

static void build_sample(void **ret_buf, size_t *ret_size)
{
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w = NULL;
        uint64_t blob_fill[2] = {0, 0};
        uint64_t chunk_index = 0;
        char err[256] = "";

        cairn_chunker_params_default(&p);
        assert_int_equal(cairn_manifest_writer_new(&p, &w), 0);

        for (size_t i = 0; i < N_SAMPLE; i++) {
                const struct node *n = &sample[i];
                struct cairn_manifest_inode in = {
                    .mode = n->mode,
                    .uid = 1000 + (uint32_t)i,
                    .gid = 2000 + (uint32_t)i,
                    .nlink = 1,
                    .mtime_sec = 1700000000 + (int64_t)i,
                    .mtime_nsec = 999999999u - (uint32_t)i,
                    .parent = (uint32_t)n->parent,
                };
                uint32_t ino;

                if (S_ISREG(n->mode)) {
                        in.first = cairn_manifest_writer_chunk_count(w);
                        in.count = (uint64_t)n->nchunks;
                        for (int k = 0; k < n->nchunks; k++) {
                                uint32_t size = n->chunks[k];
                                bool zstd = chunk_index % 2 == 0;
                                uint32_t blob = (uint32_t)(chunk_index % 2);
                                struct cairn_manifest_chunk c = {
                                    .id = chunk_id(size, k),
                                    .file_offset = in.size,
                                    .blob_offset = blob_fill[blob],
                                    .blob = blob,
                                    .stored_size = zstd ? size / 2 + 1 : size,
                                    .size = size,
                                    .flags = zstd ? CAIRN_CHUNK_ZSTD : 0,
                                };
                                assert_int_equal(cairn_manifest_writer_add_chunk(w, &c, NULL), 0);
                                blob_fill[blob] += c.stored_size;
                                in.size += size;
                                chunk_index++;
                        }
                } else if (S_ISLNK(n->mode)) {
                        size_t len = strlen(n->target);
                        assert_int_equal(
                            cairn_manifest_writer_add_string(w, n->target, len, &in.first), 0);
                        in.count = in.size = len;
                }
                assert_int_equal(cairn_manifest_writer_add_inode(w, &in, &ino), 0);
                assert_int_equal(ino, i);
        }

        /* Directories: contiguous sorted entries; nlink counts subdirectories. */
        for (size_t d = 0; d < N_SAMPLE; d++) {
                if (!S_ISDIR(sample[d].mode))
                        continue;
                uint64_t first = cairn_manifest_writer_dirent_count(w), count = 0;
                uint32_t subdirs = 0;
                for (size_t c = 1; c < N_SAMPLE; c++) {
                        if ((size_t)sample[c].parent != d)
                                continue;
                        struct cairn_manifest_dirent e = {
                            .name_len = (uint32_t)strlen(sample[c].name),
                            .inode = (uint32_t)c,
                        };
                        assert_int_equal(cairn_manifest_writer_add_string(
                                             w, sample[c].name, e.name_len, &e.name_offset),
                                         0);
                        assert_int_equal(cairn_manifest_writer_add_dirent(w, &e, NULL), 0);
                        count++;
                        subdirs += S_ISDIR(sample[c].mode);
                }
                struct cairn_manifest_inode *in = cairn_manifest_writer_inode(w, (uint32_t)d);
                assert_non_null(in);
                in->first = first;
                in->count = in->size = count;
                in->nlink = 2 + subdirs;
        }

        /* Blobs last, now that their sizes are known; indices 0 and 1 as used above. */
        for (uint32_t b = 0; b < 2; b++) {
                struct cairn_digest d;
                uint32_t index;
                memset(&d, 0xb0 + (int)b, sizeof(d));
                assert_int_equal(cairn_manifest_writer_add_blob(w, &d, blob_fill[b], &index), 0);
                assert_int_equal(index, b);
        }

        int r = cairn_manifest_writer_finish(w, ret_buf, ret_size, err, sizeof(err));
        if (r < 0)
                fail_msg("finish: %s (%d)", err, r);
        cairn_manifest_writer_free(w);
}

/* Mutable views into a serialized manifest, for corrupting it. */
static struct cairn_manifest_header *hdr(void *buf)
{
        return buf;
}

static struct cairn_manifest_inode *inode(void *buf, uint32_t i)
{
        return (struct cairn_manifest_inode *)((uint8_t *)buf + hdr(buf)->inodes_offset) + i;
}

static struct cairn_manifest_dirent *dirent(void *buf, uint64_t i)
{
        return (struct cairn_manifest_dirent *)((uint8_t *)buf + hdr(buf)->dirents_offset) + i;
}

static struct cairn_manifest_chunk *chunk(void *buf, uint64_t i)
{
        return (struct cairn_manifest_chunk *)((uint8_t *)buf + hdr(buf)->chunks_offset) + i;
}

static struct cairn_manifest_blob *blob(void *buf, uint32_t i)
{
        return (struct cairn_manifest_blob *)((uint8_t *)buf + hdr(buf)->blobs_offset) + i;
}

static char *strtab(void *buf)
{
        return (char *)buf + hdr(buf)->strtab_offset;
}

/* The dirent of the sample tree that names inode ino. */
static struct cairn_manifest_dirent *dirent_of(void *buf, uint32_t ino)
{
        for (uint64_t i = 0; i < hdr(buf)->dirent_count; i++)
                if (dirent(buf, i)->inode == ino)
                        return dirent(buf, i);
        fail_msg("no dirent for inode %u", ino);
        return NULL;
}

/* Asserts that validation fails with -EINVAL, a message containing what, and no view. */
static void expect_invalid_size(const void *buf, size_t size, const char *what)
{
        struct cairn_manifest view, untouched;
        char err[256];

        memset(&view, 0x5a, sizeof(view));
        untouched = view;
        memset(err, 0, sizeof(err));
        int r = cairn_manifest_validate(buf, size, &view, err, sizeof(err));
        if (r != -EINVAL)
                fail_msg("expected -EINVAL for '%s', got %d (%s)", what, r, err);
        assert_true(strlen(err) > 0);
        assert_null(strchr(err, '\n'));
        if (!strstr(err, what))
                fail_msg("expected an error about '%s', got '%s'", what, err);
        assert_memory_equal(&view, &untouched, sizeof(view));
}

static void expect_invalid(void *buf, size_t size, const char *what)
{
        expect_invalid_size(buf, size, what);
        free(buf);
}

static void open_sample(void **ret_buf, struct cairn_manifest *ret_m)
{
        size_t size;
        char err[256] = "";

        build_sample(ret_buf, &size);
        int r = cairn_manifest_validate(*ret_buf, size, ret_m, err, sizeof(err));
        if (r < 0)
                fail_msg("validate: %s (%d)", err, r);
}

/* ------------------------------------------------------------------------------------------ */
/* Round trip                                                                                 */

static void test_round_trip_header(void **state)
{
        (void)state;
        struct cairn_manifest m;
        void *buf;

        open_sample(&buf, &m);
        assert_memory_equal(m.hdr->magic, CAIRN_MANIFEST_MAGIC, 8);
        assert_int_equal(m.hdr->version, CAIRN_MANIFEST_VERSION);
        assert_int_equal(cairn_manifest_inode_count(&m), N_SAMPLE);
        assert_int_equal(m.hdr->dirent_count, N_SAMPLE - 1);
        assert_int_equal(m.hdr->chunk_count, 7);
        assert_int_equal(m.hdr->blob_count, 2);
        assert_int_equal(m.hdr->inodes_offset, CAIRN_MANIFEST_HEADER_SIZE);
        assert_int_equal(m.hdr->logical_size, 350 + 10 + 1 + 107);
        assert_int_equal(m.hdr->chunk_min, CAIRN_CHUNK_MIN_DEFAULT);
        assert_int_equal(m.hdr->chunk_avg, CAIRN_CHUNK_AVG_DEFAULT);
        assert_int_equal(m.hdr->chunk_max, CAIRN_CHUNK_MAX_DEFAULT);
        assert_int_equal(m.hdr->total_size, m.size);
        assert_ptr_equal(m.base, buf);
        assert_int_equal(m.hdr->dirents_offset % 8, 0);
        assert_int_equal(m.hdr->chunks_offset % 8, 0);
        assert_int_equal(m.hdr->blobs_offset % 8, 0);
        assert_int_equal(m.hdr->strtab_offset % 8, 0);

        /* Every inode attribute survives. */
        for (uint32_t i = 0; i < N_SAMPLE; i++) {
                const struct cairn_manifest_inode *in = cairn_manifest_inode(&m, i);
                assert_int_equal(in->mode, sample[i].mode);
                assert_int_equal(in->uid, 1000 + i);
                assert_int_equal(in->gid, 2000 + i);
                assert_int_equal(in->mtime_sec, 1700000000 + (int64_t)i);
                assert_int_equal(in->mtime_nsec, 999999999u - i);
                assert_int_equal(in->parent, (uint32_t)sample[i].parent);
        }
        assert_int_equal(cairn_manifest_inode(&m, INO_ROOT)->nlink, 3);
        assert_int_equal(cairn_manifest_inode(&m, INO_A)->nlink, 3);
        assert_int_equal(cairn_manifest_inode(&m, INO_B)->nlink, 2);
        assert_int_equal(cairn_manifest_inode(&m, INO_FILE)->size, 350);
        assert_int_equal(cairn_manifest_inode(&m, INO_EMPTY)->size, 0);
        assert_int_equal(cairn_manifest_inode(&m, INO_EMPTY)->count, 0);
        free(buf);
}

static void test_lookup(void **state)
{
        (void)state;
        struct cairn_manifest m;
        uint32_t ino;
        void *buf;

        open_sample(&buf, &m);
        for (uint32_t i = 1; i < N_SAMPLE; i++) {
                ino = UINT32_MAX;
                assert_int_equal(cairn_manifest_lookup(&m, (uint32_t)sample[i].parent,
                                                       sample[i].name, strlen(sample[i].name),
                                                       &ino),
                                 0);
                assert_int_equal(ino, i);
        }

        /* Misses: before, between and after the entries, prefixes and extensions. */
        static const char *const misses[] = {"",     "0",     "A",   "b", "emptx", "empty2", "fil",
                                             "filf", "file ", "zzz", "~", ".",     "..",     "a/b"};
        for (size_t k = 0; k < sizeof(misses) / sizeof(misses[0]); k++) {
                ino = 12345;
                assert_int_equal(
                    cairn_manifest_lookup(&m, INO_ROOT, misses[k], strlen(misses[k]), &ino),
                    -ENOENT);
                assert_int_equal(ino, 12345);
        }
        /* The name is (pointer, length): a longer buffer is not read past name_len. */
        assert_int_equal(cairn_manifest_lookup(&m, INO_ROOT, "filexyz", 4, &ino), 0);
        assert_int_equal(ino, INO_FILE);

        char longname[CAIRN_NAME_MAX + 2];
        memset(longname, 'z', sizeof(longname));
        assert_int_equal(cairn_manifest_lookup(&m, INO_ROOT, longname, sizeof(longname), &ino),
                         -ENOENT);
        assert_int_equal(cairn_manifest_lookup(&m, INO_FILE, "x", 1, &ino), -ENOTDIR);
        assert_int_equal(cairn_manifest_lookup(&m, INO_LINK, "x", 1, &ino), -ENOTDIR);
        assert_int_equal(cairn_manifest_lookup(&m, N_SAMPLE, "x", 1, &ino), -ENOENT);
        assert_int_equal(cairn_manifest_lookup(&m, INO_B, "deep", 4, &ino), 0);
        assert_int_equal(ino, INO_DEEP);
        free(buf);
}

static void test_resolve(void **state)
{
        (void)state;
        struct cairn_manifest m;
        uint32_t ino;
        void *buf;

        open_sample(&buf, &m);
        static const struct {
                const char *path;
                int r;
                uint32_t ino;
        } cases[] = {
            {"", 0, INO_ROOT},
            {"/", 0, INO_ROOT},
            {"///", 0, INO_ROOT},
            {"a", 0, INO_A},
            {"a/", 0, INO_A},
            {"a/b/deep", 0, INO_DEEP},
            {"/a//b///deep/", 0, INO_DEEP},
            {"a/b/sp ace \xc3\xa9", 0, INO_SPACE},
            {"a/x", 0, INO_X},
            {"link", 0, INO_LINK},
            {"empty", 0, INO_EMPTY},
            {"nope", -ENOENT, 0},
            {"a/nope", -ENOENT, 0},
            {"a/b/deep2", -ENOENT, 0},
            {"a/x/y", -ENOTDIR, 0},
            {"link/deep", -ENOTDIR, 0}, /* symlinks are not followed */
            {"a/./b", -ENOENT, 0},
            {"a/../a", -ENOENT, 0},
        };
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
                ino = 777;
                int r = cairn_manifest_resolve(&m, cases[k].path, &ino);
                if (r != cases[k].r)
                        fail_msg("resolve '%s': %d, expected %d", cases[k].path, r, cases[k].r);
                assert_int_equal(ino, cases[k].r == 0 ? cases[k].ino : 777);
        }
        free(buf);
}

static void test_dirent_at(void **state)
{
        (void)state;
        struct cairn_manifest m;
        void *buf;

        open_sample(&buf, &m);
        static const char *const root_names[] = {"a", "empty", "file", "link", "zz"};
        static const uint32_t root_inodes[] = {INO_A, INO_EMPTY, INO_FILE, INO_LINK, INO_ZZ};
        for (uint64_t i = 0; i < 5; i++) {
                const struct cairn_manifest_dirent *e = cairn_manifest_dirent_at(&m, INO_ROOT, i);
                assert_non_null(e);
                assert_int_equal(e->name_len, strlen(root_names[i]));
                assert_memory_equal(cairn_manifest_string(&m, e->name_offset), root_names[i],
                                    e->name_len);
                assert_int_equal(e->inode, root_inodes[i]);
        }
        assert_null(cairn_manifest_dirent_at(&m, INO_ROOT, 5));
        assert_null(cairn_manifest_dirent_at(&m, INO_ROOT, UINT64_MAX));
        assert_null(cairn_manifest_dirent_at(&m, INO_FILE, 0));
        assert_null(cairn_manifest_dirent_at(&m, INO_LINK, 0));
        assert_null(cairn_manifest_dirent_at(&m, N_SAMPLE, 0));
        const struct cairn_manifest_dirent *e = cairn_manifest_dirent_at(&m, INO_B, 1);
        assert_non_null(e);
        assert_int_equal(e->inode, INO_SPACE);
        assert_null(cairn_manifest_dirent_at(&m, INO_B, 2));

        /* Symlink targets come back byte for byte. */
        const struct cairn_manifest_inode *l = cairn_manifest_inode(&m, INO_LINK);
        assert_int_equal(l->size, strlen("a/b/deep"));
        assert_memory_equal(cairn_manifest_string(&m, l->first), "a/b/deep", l->size);
        l = cairn_manifest_inode(&m, INO_SPACE);
        assert_memory_equal(cairn_manifest_string(&m, l->first), "/abs/target", l->size);
        free(buf);
}

static void test_find_chunk(void **state)
{
        (void)state;
        struct cairn_manifest m;
        uint64_t c;
        void *buf;

        open_sample(&buf, &m);
        const struct cairn_manifest_inode *f = cairn_manifest_inode(&m, INO_FILE);
        /* Chunks 100 + 200 + 50: every boundary, both sides. */
        static const struct {
                uint64_t off;
                uint64_t k;
        } hits[] = {{0, 0}, {1, 0}, {99, 0}, {100, 1}, {101, 1}, {299, 1}, {300, 2}, {349, 2}};
        for (size_t k = 0; k < sizeof(hits) / sizeof(hits[0]); k++) {
                c = UINT64_MAX;
                assert_int_equal(cairn_manifest_find_chunk(&m, INO_FILE, hits[k].off, &c), 0);
                assert_int_equal(c, f->first + hits[k].k);
                const struct cairn_manifest_chunk *ch = &m.chunks[c];
                assert_true(ch->file_offset <= hits[k].off);
                assert_true(hits[k].off < ch->file_offset + ch->size);
        }
        c = 42;
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_FILE, 350, &c), -ENXIO);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_FILE, 351, &c), -ENXIO);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_FILE, UINT64_MAX, &c), -ENXIO);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_EMPTY, 0, &c), -ENXIO);
        assert_int_equal(c, 42);

        /* Single-chunk and one-byte files. */
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_X, 0, &c), 0);
        assert_int_equal(c, cairn_manifest_inode(&m, INO_X)->first);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_X, 1, &c), -ENXIO);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_DEEP, 106, &c), 0);
        assert_int_equal(c, cairn_manifest_inode(&m, INO_DEEP)->first + 1);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_DEEP, 107, &c), -ENXIO);

        assert_int_equal(cairn_manifest_find_chunk(&m, INO_ROOT, 0, &c), -EISDIR);
        assert_int_equal(cairn_manifest_find_chunk(&m, INO_LINK, 0, &c), -EINVAL);
        assert_int_equal(cairn_manifest_find_chunk(&m, N_SAMPLE, 0, &c), -EINVAL);
        free(buf);
}

/* A file of many equal chunks: find_chunk agrees with a linear scan at every offset class. */
static void test_find_chunk_many(void **state)
{
        (void)state;
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w;
        struct cairn_manifest m;
        struct cairn_digest d = {{1}};
        char err[256] = "";
        void *buf;
        size_t size;
        uint32_t sizes[37];
        uint64_t total = 0;

        cairn_chunker_params_default(&p);
        assert_int_equal(cairn_manifest_writer_new(&p, &w), 0);
        struct cairn_manifest_inode root = {
            .mode = S_IFDIR | 0755, .nlink = 2, .size = 1, .count = 1};
        assert_int_equal(cairn_manifest_writer_add_inode(w, &root, NULL), 0);
        struct cairn_manifest_inode f = {.mode = S_IFREG | 0644, .nlink = 1, .count = 37};
        for (int k = 0; k < 37; k++) {
                sizes[k] = 1 + (uint32_t)(k * 7919) % 1000;
                struct cairn_manifest_chunk c = {.file_offset = total,
                                                 .blob_offset = total,
                                                 .stored_size = sizes[k],
                                                 .size = sizes[k]};
                c.id.bytes[0] = (uint8_t)k;
                assert_int_equal(cairn_manifest_writer_add_chunk(w, &c, NULL), 0);
                total += sizes[k];
        }
        f.size = total;
        assert_int_equal(cairn_manifest_writer_add_inode(w, &f, NULL), 0);
        struct cairn_manifest_dirent e = {.name_len = 1, .inode = 1};
        assert_int_equal(cairn_manifest_writer_add_string(w, "f", 1, &e.name_offset), 0);
        assert_int_equal(cairn_manifest_writer_add_dirent(w, &e, NULL), 0);
        assert_int_equal(cairn_manifest_writer_add_blob(w, &d, total, NULL), 0);
        assert_int_equal(cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err)), 0);
        cairn_manifest_writer_free(w);
        assert_int_equal(cairn_manifest_validate(buf, size, &m, err, sizeof(err)), 0);

        uint64_t start = 0;
        for (int k = 0; k < 37; k++) {
                uint64_t offs[] = {start, start + sizes[k] / 2, start + sizes[k] - 1};
                for (int j = 0; j < 3; j++) {
                        uint64_t c;
                        assert_int_equal(cairn_manifest_find_chunk(&m, 1, offs[j], &c), 0);
                        assert_int_equal(c, (uint64_t)k);
                }
                start += sizes[k];
        }
        uint64_t c;
        assert_int_equal(cairn_manifest_find_chunk(&m, 1, total, &c), -ENXIO);
        free(buf);
}

static void test_stats(void **state)
{
        (void)state;
        struct cairn_manifest m;
        struct cairn_manifest_stats st;
        void *buf;

        open_sample(&buf, &m);
        assert_int_equal(cairn_manifest_stats(&m, NULL, &st), 0);
        assert_int_equal(st.dirs, 3);
        assert_int_equal(st.files, 5);
        assert_int_equal(st.symlinks, 2);
        assert_int_equal(st.logical_bytes, 468);
        assert_int_equal(st.chunk_refs, 7);
        /* deep's first chunk repeats file's first: 6 distinct ids. */
        assert_int_equal(st.unique_chunks, 6);
        assert_int_equal(st.unique_bytes, 468 - 100);
        uint64_t stored = 0, blob_bytes = 0;
        for (uint64_t i = 0; i < 7; i++)
                stored += m.chunks[i].stored_size;
        stored -= m.chunks[cairn_manifest_inode(&m, INO_DEEP)->first].stored_size;
        for (uint32_t b = 0; b < 2; b++)
                blob_bytes += m.blobs[b].size;
        assert_int_equal(st.stored_bytes, stored);
        assert_int_equal(st.blobs, 2);
        assert_int_equal(st.blob_bytes, blob_bytes);
        assert_int_equal(st.base_shared_chunks, 0);
        assert_int_equal(st.base_shared_bytes, 0);

        /* Against itself every distinct chunk is shared. */
        assert_int_equal(cairn_manifest_stats(&m, &m, &st), 0);
        assert_int_equal(st.base_shared_chunks, 6);
        assert_int_equal(st.base_shared_bytes, stored);
        free(buf);
}

static void test_writer_blob_dedup(void **state)
{
        (void)state;
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w;
        struct cairn_digest d;
        uint32_t idx;

        cairn_chunker_params_default(&p);
        assert_int_equal(cairn_manifest_writer_new(&p, &w), 0);
        /* Enough blobs to make the table grow several times. */
        for (uint32_t i = 0; i < 1000; i++) {
                memset(&d, 0, sizeof(d));
                memcpy(d.bytes + 20, &i, sizeof(i));
                assert_int_equal(cairn_manifest_writer_add_blob(w, &d, 100 + i, &idx), 0);
                assert_int_equal(idx, i);
        }
        for (uint32_t i = 0; i < 1000; i += 37) {
                memset(&d, 0, sizeof(d));
                memcpy(d.bytes + 20, &i, sizeof(i));
                idx = UINT32_MAX;
                assert_int_equal(cairn_manifest_writer_add_blob(w, &d, 100 + i, &idx), 0);
                assert_int_equal(idx, i);
                /* The same digest with another size is a caller bug. */
                assert_int_equal(cairn_manifest_writer_add_blob(w, &d, 99, &idx), -EINVAL);
        }
        cairn_manifest_writer_free(w);
        cairn_manifest_writer_free(NULL);

        p.avg_size = 3;
        w = NULL;
        assert_int_equal(cairn_manifest_writer_new(&p, &w), -EINVAL);
        assert_null(w);
}

static void test_writer_rejects_invalid(void **state)
{
        (void)state;
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w;
        char err[256] = "";
        void *buf = (void *)0x1;
        size_t size = 77;

        cairn_chunker_params_default(&p);
        assert_int_equal(cairn_manifest_writer_new(&p, &w), 0);
        /* No root at all. */
        assert_int_equal(cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err)), -EINVAL);
        assert_true(strlen(err) > 0);
        /* A root whose nlink ignores its subdirectory. */
        struct cairn_manifest_inode root = {
            .mode = S_IFDIR | 0755, .nlink = 2, .size = 1, .count = 1};
        struct cairn_manifest_inode sub = {.mode = S_IFDIR | 0755, .nlink = 2};
        assert_int_equal(cairn_manifest_writer_add_inode(w, &root, NULL), 0);
        assert_int_equal(cairn_manifest_writer_add_inode(w, &sub, NULL), 0);
        struct cairn_manifest_dirent e = {.name_len = 3, .inode = 1};
        assert_int_equal(cairn_manifest_writer_add_string(w, "sub", 3, &e.name_offset), 0);
        assert_int_equal(cairn_manifest_writer_add_dirent(w, &e, NULL), 0);
        err[0] = '\0';
        assert_int_equal(cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "nlink"));
        assert_ptr_equal(buf, (void *)0x1);
        assert_int_equal(size, 77);
        /* Fixed, it serializes. */
        cairn_manifest_writer_inode(w, 0)->nlink = 3;
        assert_null(cairn_manifest_writer_inode(w, 2));
        assert_int_equal(cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err)), 0);
        assert_int_equal(size, CAIRN_MANIFEST_HEADER_SIZE + 2 * CAIRN_MANIFEST_INODE_SIZE +
                                   CAIRN_MANIFEST_DIRENT_SIZE + 3);
        free(buf);
        cairn_manifest_writer_free(w);
}

/*
 * A million inodes (1,000 directories of 999 files): validation stays one
 * linear pass.  The figure to reach is well under 100 ms on a release
 * build; the assertion is looser so that sanitizer builds pass too.
 */
static void test_validate_million(void **state)
{
        (void)state;
        enum { DIRS = 1000, FILES = 999 };
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w;
        struct cairn_manifest m;
        char err[256] = "", name[16];
        void *buf;
        size_t size;

        cairn_chunker_params_default(&p);
        assert_int_equal(cairn_manifest_writer_new(&p, &w), 0);
        struct cairn_manifest_inode root = {
            .mode = S_IFDIR | 0755, .nlink = 2 + DIRS, .size = DIRS, .count = DIRS};
        assert_int_equal(cairn_manifest_writer_add_inode(w, &root, NULL), 0);
        for (uint32_t d = 0; d < DIRS; d++) {
                struct cairn_manifest_inode in = {.mode = S_IFDIR | 0755,
                                                  .nlink = 2,
                                                  .first = DIRS + (uint64_t)d * FILES,
                                                  .size = FILES,
                                                  .count = FILES};
                assert_int_equal(cairn_manifest_writer_add_inode(w, &in, NULL), 0);
                struct cairn_manifest_dirent e = {.name_len = 5, .inode = 1 + d};
                snprintf(name, sizeof(name), "d%04u", d);
                assert_int_equal(cairn_manifest_writer_add_string(w, name, 5, &e.name_offset), 0);
                assert_int_equal(cairn_manifest_writer_add_dirent(w, &e, NULL), 0);
        }
        for (uint32_t d = 0; d < DIRS; d++)
                for (uint32_t f = 0; f < FILES; f++) {
                        struct cairn_manifest_inode in = {
                            .mode = S_IFREG | 0644, .nlink = 1, .parent = 1 + d};
                        uint32_t ino;
                        assert_int_equal(cairn_manifest_writer_add_inode(w, &in, &ino), 0);
                        struct cairn_manifest_dirent e = {.name_len = 5, .inode = ino};
                        snprintf(name, sizeof(name), "f%04u", f);
                        assert_int_equal(
                            cairn_manifest_writer_add_string(w, name, 5, &e.name_offset), 0);
                        assert_int_equal(cairn_manifest_writer_add_dirent(w, &e, NULL), 0);
                }
        int r = cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err));
        if (r < 0)
                fail_msg("finish: %s", err);
        cairn_manifest_writer_free(w);

        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(cairn_manifest_validate(buf, size, &m, err, sizeof(err)), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        print_message("validated %u inodes (%zu bytes) in %.1f ms\n",
                      cairn_manifest_inode_count(&m), size, ms);
        assert_int_equal(cairn_manifest_inode_count(&m), 1 + DIRS + DIRS * FILES);
        assert_true(ms < 2000.0);

        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(&m, "d0999/f0998", &ino), 0);
        assert_int_equal(ino, cairn_manifest_inode_count(&m) - 1);
        assert_int_equal(cairn_manifest_resolve(&m, "d0500/f0999", &ino), -ENOENT);
        free(buf);
}

/* ------------------------------------------------------------------------------------------ */
/* Malformed manifests: one class each                                                        */

#define CORRUPT_TEST(fn)                                                                           \
        static void fn(void **state)                                                               \
        {                                                                                          \
                (void)state;                                                                       \
                void *buf;                                                                         \
                size_t size;                                                                       \
                build_sample(&buf, &size);                                                         \
                fn##_body(buf, size);                                                              \
        }

static void bad_magic_body(void *buf, size_t size)
{
        hdr(buf)->magic[7] = 'Y';
        expect_invalid(buf, size, "magic");
}
CORRUPT_TEST(bad_magic)

static void bad_version_body(void *buf, size_t size)
{
        hdr(buf)->version = CAIRN_MANIFEST_VERSION + 1;
        expect_invalid_size(buf, size, "version");
        hdr(buf)->version = 0;
        expect_invalid(buf, size, "version");
}
CORRUPT_TEST(bad_version)

static void unknown_flags_body(void *buf, size_t size)
{
        hdr(buf)->flags = 0x80000000u;
        expect_invalid(buf, size, "flags");
}
CORRUPT_TEST(unknown_flags)

static void reserved_header_body(void *buf, size_t size)
{
        hdr(buf)->reserved0 = 1;
        expect_invalid_size(buf, size, "reserved");
        hdr(buf)->reserved0 = 0;
        hdr(buf)->reserved0 = 1;
        expect_invalid(buf, size, "reserved");
}
CORRUPT_TEST(reserved_header)

static void truncated_header_body(void *buf, size_t size)
{
        (void)size;
        expect_invalid_size(buf, 0, "truncated header");
        expect_invalid_size(buf, 8, "truncated header");
        expect_invalid_size(buf, CAIRN_MANIFEST_HEADER_SIZE - 1, "truncated header");
        /* A header alone claims tables that are not there. */
        hdr(buf)->total_size = CAIRN_MANIFEST_HEADER_SIZE;
        expect_invalid(buf, CAIRN_MANIFEST_HEADER_SIZE, "extends past");
}
CORRUPT_TEST(truncated_header)

static void truncated_tables_body(void *buf, size_t size)
{
        (void)size;
        /* Cut inside the blob table and make total_size agree, so the table check fires. */
        size_t cut = hdr(buf)->blobs_offset + CAIRN_MANIFEST_BLOB_SIZE + 3;
        hdr(buf)->total_size = cut;
        expect_invalid_size(buf, cut, "blob table");
        cut = hdr(buf)->dirents_offset + 5;
        hdr(buf)->total_size = cut;
        expect_invalid(buf, cut, "dirent table");
}
CORRUPT_TEST(truncated_tables)

static void total_size_mismatch_body(void *buf, size_t size)
{
        /* The buffer is shorter than the manifest says... */
        expect_invalid_size(buf, size - 1, "total_size");
        /* ...or the header lies about it. */
        hdr(buf)->total_size = size + 1;
        expect_invalid(buf, size, "total_size");
}
CORRUPT_TEST(total_size_mismatch)

static void trailing_bytes_body(void *buf, size_t size)
{
        /* The string table must end the manifest exactly. */
        hdr(buf)->strtab_size -= 2;
        expect_invalid(buf, size, "trailing");
}
CORRUPT_TEST(trailing_bytes)

static void section_offset_lies_body(void *buf, size_t size)
{
        hdr(buf)->inodes_offset = 0;
        expect_invalid_size(buf, size, "inode table at offset 0");
        hdr(buf)->inodes_offset = CAIRN_MANIFEST_HEADER_SIZE;
        hdr(buf)->dirents_offset += 16;
        expect_invalid_size(buf, size, "dirent table");
        hdr(buf)->dirents_offset -= 16;
        hdr(buf)->chunks_offset = hdr(buf)->inodes_offset;
        expect_invalid_size(buf, size, "chunk table");
        hdr(buf)->chunks_offset =
            hdr(buf)->dirents_offset + hdr(buf)->dirent_count * CAIRN_MANIFEST_DIRENT_SIZE;
        hdr(buf)->strtab_offset -= 8;
        expect_invalid(buf, size, "string table");
}
CORRUPT_TEST(section_offset_lies)

static void count_overflow_body(void *buf, size_t size)
{
        /* count * 64 wraps around to a small number. */
        hdr(buf)->chunk_count = (UINT64_MAX >> 6) + 2;
        expect_invalid_size(buf, size, "overflows");
        hdr(buf)->chunk_count = 7;
        hdr(buf)->strtab_size = UINT64_MAX - 10;
        expect_invalid_size(buf, size, "overflows");
        hdr(buf)->strtab_size = 1;
        /* Huge but not wrapping: simply past the end. */
        hdr(buf)->chunk_count = 1ull << 40;
        expect_invalid(buf, size, "extends past");
}
CORRUPT_TEST(count_overflow)

static void inode_counts_body(void *buf, size_t size)
{
        hdr(buf)->dirent_count--;
        expect_invalid_size(buf, size, "dirent_count");
        hdr(buf)->dirent_count++;
        hdr(buf)->inode_count = 0;
        expect_invalid_size(buf, size, "no inodes");
        hdr(buf)->inode_count = UINT32_MAX;
        expect_invalid(buf, size, "too many inodes");
}
CORRUPT_TEST(inode_counts)

static void size_cap_body(void *buf, size_t size)
{
        struct cairn_manifest view;
        char err[128] = "";
        (void)size;
        /* The cap is checked before any byte is read, so the short buffer is never touched. */
        assert_int_equal(cairn_manifest_validate(buf, (size_t)CAIRN_MANIFEST_MAX_SIZE + 1, &view,
                                                 err, sizeof(err)),
                         -EFBIG);
        assert_true(strlen(err) > 0);
        free(buf);
}
CORRUPT_TEST(size_cap)

static void unaligned_body(void *buf, size_t size)
{
        uint8_t *copy = malloc(size + 8);
        assert_non_null(copy);
        memcpy(copy + 4, buf, size);
        expect_invalid_size(copy + 4, size, "aligned");
        free(copy);
        free(buf);
}
CORRUPT_TEST(unaligned)

static void bad_chunk_params_body(void *buf, size_t size)
{
        hdr(buf)->chunk_avg = 3 * 1024 * 1024;
        expect_invalid_size(buf, size, "chunking parameters");
        hdr(buf)->chunk_avg = CAIRN_CHUNK_AVG_DEFAULT;
        hdr(buf)->chunk_max = CAIRN_CHUNK_MAX_LIMIT + 1;
        expect_invalid(buf, size, "chunking parameters");
}
CORRUPT_TEST(bad_chunk_params)

static void logical_size_body(void *buf, size_t size)
{
        hdr(buf)->logical_size++;
        expect_invalid(buf, size, "logical_size");
}
CORRUPT_TEST(logical_size)

static void name_dot_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *e = dirent_of(buf, INO_A); /* "a" */
        strtab(buf)[e->name_offset] = '.';
        expect_invalid(buf, size, "name is '.'");
}
CORRUPT_TEST(name_dot)

static void name_dotdot_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *e = dirent_of(buf, INO_ZZ); /* "zz" */
        memcpy(strtab(buf) + e->name_offset, "..", 2);
        expect_invalid(buf, size, "name is '..'");
}
CORRUPT_TEST(name_dotdot)

static void name_empty_body(void *buf, size_t size)
{
        dirent_of(buf, INO_FILE)->name_len = 0;
        expect_invalid_size(buf, size, "name length 0");
        dirent_of(buf, INO_FILE)->name_len = CAIRN_NAME_MAX + 1;
        expect_invalid(buf, size, "name length 256");
}
CORRUPT_TEST(name_empty)

static void name_slash_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *e = dirent_of(buf, INO_FILE);
        strtab(buf)[e->name_offset + 2] = '/';
        expect_invalid(buf, size, "'/'");
}
CORRUPT_TEST(name_slash)

static void name_nul_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *e = dirent_of(buf, INO_FILE);
        strtab(buf)[e->name_offset + 3] = '\0';
        expect_invalid(buf, size, "NUL");
}
CORRUPT_TEST(name_nul)

static void names_unsorted_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *a = dirent_of(buf, INO_EMPTY), *b = dirent_of(buf, INO_FILE);
        uint64_t off = a->name_offset;
        uint32_t len = a->name_len;
        a->name_offset = b->name_offset;
        a->name_len = b->name_len;
        b->name_offset = off;
        b->name_len = len;
        expect_invalid(buf, size, "sorted");
}
CORRUPT_TEST(names_unsorted)

static void names_duplicate_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *a = dirent_of(buf, INO_EMPTY), *b = dirent_of(buf, INO_FILE);
        b->name_offset = a->name_offset;
        b->name_len = a->name_len;
        expect_invalid(buf, size, "unique");
}
CORRUPT_TEST(names_duplicate)

static void names_prefix_order_body(void *buf, size_t size)
{
        /* "empty" then "emp": a prefix sorts first, so this order is wrong. */
        struct cairn_manifest_dirent *b = dirent_of(buf, INO_FILE);
        b->name_offset = dirent_of(buf, INO_EMPTY)->name_offset;
        b->name_len = 3;
        expect_invalid(buf, size, "not after");
}
CORRUPT_TEST(names_prefix_order)

static void name_outside_strtab_body(void *buf, size_t size)
{
        struct cairn_manifest_dirent *e = dirent_of(buf, INO_ZZ);
        e->name_offset = hdr(buf)->strtab_size - 1;
        expect_invalid_size(buf, size, "outside the string table");
        e->name_offset = UINT64_MAX - 1; /* offset + len would wrap */
        expect_invalid(buf, size, "outside the string table");
}
CORRUPT_TEST(name_outside_strtab)

static void child_not_after_parent_body(void *buf, size_t size)
{
        /* a/b/deep -> a: a cycle if it were accepted. */
        struct cairn_manifest_dirent *deep = dirent_of(buf, INO_DEEP);
        deep->inode = INO_A;
        expect_invalid_size(buf, size, "inode 6: entry 'deep' refers to inode 1");
        deep->inode = INO_DEEP;
        /* A directory containing itself: a/b -> a. */
        dirent_of(buf, INO_B)->inode = INO_A;
        expect_invalid(buf, size, "inode 1: entry 'b' refers to inode 1");
}
CORRUPT_TEST(child_not_after_parent)

static void child_is_root_body(void *buf, size_t size)
{
        dirent_of(buf, INO_ZZ)->inode = 0;
        expect_invalid(buf, size, "refers to inode 0");
}
CORRUPT_TEST(child_is_root)

static void child_out_of_range_body(void *buf, size_t size)
{
        dirent_of(buf, INO_ZZ)->inode = N_SAMPLE;
        expect_invalid(buf, size, "refers to inode");
}
CORRUPT_TEST(child_out_of_range)

static void inode_referenced_twice_body(void *buf, size_t size)
{
        dirent_of(buf, INO_ZZ)->inode = INO_EMPTY;
        expect_invalid(buf, size, "referenced twice");
}
CORRUPT_TEST(inode_referenced_twice)

static void orphan_inode_body(void *buf, size_t size)
{
        /* b forgets its last entry: that symlink is in no directory. */
        inode(buf, INO_B)->count = 1;
        inode(buf, INO_B)->size = 1;
        expect_invalid(buf, size, "inode 9 is not in any directory");
}
CORRUPT_TEST(orphan_inode)

static void overlapping_dirs_body(void *buf, size_t size)
{
        /* a's entries overlap the root's last two: their children get two names. */
        inode(buf, INO_A)->first = 3;
        expect_invalid(buf, size, "inode 1: entry 'link': inode 4 is referenced twice");
}
CORRUPT_TEST(overlapping_dirs)

static void wrong_parent_body(void *buf, size_t size)
{
        inode(buf, INO_X)->parent = INO_ROOT;
        expect_invalid(buf, size, "parent is 0");
}
CORRUPT_TEST(wrong_parent)

static void root_not_dir_body(void *buf, size_t size)
{
        inode(buf, INO_ROOT)->parent = 1;
        expect_invalid_size(buf, size, "root");
        inode(buf, INO_ROOT)->parent = 0;
        inode(buf, INO_ROOT)->mode = S_IFREG | 0644;
        expect_invalid(buf, size, "root");
}
CORRUPT_TEST(root_not_dir)

static void bad_mode_type_body(void *buf, size_t size)
{
        inode(buf, INO_EMPTY)->mode = S_IFIFO | 0644;
        expect_invalid_size(buf, size, "file type");
        inode(buf, INO_EMPTY)->mode = S_IFCHR | 0644;
        expect_invalid_size(buf, size, "file type");
        inode(buf, INO_EMPTY)->mode = 0644;
        expect_invalid_size(buf, size, "file type");
        inode(buf, INO_EMPTY)->mode = S_IFREG | 0644 | 0x10000000u;
        expect_invalid(buf, size, "mode bits");
}
CORRUPT_TEST(bad_mode_type)

static void inode_fields_body(void *buf, size_t size)
{
        inode(buf, INO_X)->mtime_nsec = 1000000000u;
        expect_invalid_size(buf, size, "nanoseconds");
        inode(buf, INO_X)->mtime_nsec = 0;
        inode(buf, INO_X)->reserved = 1;
        expect_invalid(buf, size, "reserved");
}
CORRUPT_TEST(inode_fields)

static void dir_nlink_body(void *buf, size_t size)
{
        inode(buf, INO_ROOT)->nlink = 2;
        expect_invalid_size(buf, size, "nlink 2, expected 3");
        inode(buf, INO_ROOT)->nlink = 3;
        inode(buf, INO_B)->nlink = 3;
        expect_invalid_size(buf, size, "nlink 3, expected 2");
        inode(buf, INO_B)->nlink = 2;
        inode(buf, INO_X)->nlink = 2;
        expect_invalid_size(buf, size, "nlink 2, expected 1");
        inode(buf, INO_X)->nlink = 1;
        inode(buf, INO_LINK)->nlink = 0;
        expect_invalid(buf, size, "nlink 0, expected 1");
}
CORRUPT_TEST(dir_nlink)

static void dir_range_body(void *buf, size_t size)
{
        inode(buf, INO_B)->size = 3;
        expect_invalid_size(buf, size, "entry count");
        inode(buf, INO_B)->size = 2;
        inode(buf, INO_B)->first = UINT64_MAX;
        expect_invalid_size(buf, size, "out of range");
        inode(buf, INO_B)->first = 8;
        expect_invalid(buf, size, "out of range");
}
CORRUPT_TEST(dir_range)

static void chunk_past_blob_body(void *buf, size_t size)
{
        struct cairn_manifest_chunk *c = chunk(buf, 2);
        c->blob_offset = blob(buf, c->blob)->size - c->stored_size + 1;
        expect_invalid_size(buf, size, "extends past blob");
        c->blob_offset = UINT64_MAX - 1; /* offset + stored would wrap */
        expect_invalid(buf, size, "extends past blob");
}
CORRUPT_TEST(chunk_past_blob)

static void chunk_offsets_gap_body(void *buf, size_t size)
{
        chunk(buf, inode(buf, INO_FILE)->first + 1)->file_offset++;
        expect_invalid(buf, size, "chunk 1 starts at file offset 101, expected 100");
}
CORRUPT_TEST(chunk_offsets_gap)

static void chunk_offsets_start_body(void *buf, size_t size)
{
        chunk(buf, inode(buf, INO_DEEP)->first)->file_offset = 1;
        expect_invalid(buf, size, "chunk 0 starts at file offset 1, expected 0");
}
CORRUPT_TEST(chunk_offsets_start)

static void file_size_mismatch_body(void *buf, size_t size)
{
        inode(buf, INO_FILE)->size++;
        hdr(buf)->logical_size++;
        expect_invalid_size(buf, size, "sum of chunk sizes");
        inode(buf, INO_FILE)->size--;
        hdr(buf)->logical_size--;
        /* An empty file with a chunk, and a non-empty file without one. */
        inode(buf, INO_EMPTY)->count = 1;
        expect_invalid_size(buf, size, "size 0 with 1 chunks");
        inode(buf, INO_EMPTY)->count = 0;
        inode(buf, INO_EMPTY)->size = 5;
        expect_invalid(buf, size, "size 5 with 0 chunks");
}
CORRUPT_TEST(file_size_mismatch)

static void file_chunk_range_body(void *buf, size_t size)
{
        inode(buf, INO_DEEP)->first = hdr(buf)->chunk_count - 1;
        expect_invalid_size(buf, size, "out of range");
        inode(buf, INO_DEEP)->first = UINT64_MAX;
        expect_invalid(buf, size, "out of range");
}
CORRUPT_TEST(file_chunk_range)

static void blob_index_out_of_range_body(void *buf, size_t size)
{
        chunk(buf, 3)->blob = 2;
        expect_invalid_size(buf, size, "blob 2 out of range");
        chunk(buf, 3)->blob = UINT32_MAX;
        expect_invalid(buf, size, "out of range");
}
CORRUPT_TEST(blob_index_out_of_range)

static void raw_chunk_stored_size_body(void *buf, size_t size)
{
        struct cairn_manifest_chunk *c = chunk(buf, 1);
        assert_int_equal(c->flags, 0);
        c->stored_size = c->size - 1;
        expect_invalid(buf, size, "raw chunk");
}
CORRUPT_TEST(raw_chunk_stored_size)

static void chunk_fields_body(void *buf, size_t size)
{
        chunk(buf, 0)->flags = 0x2;
        expect_invalid_size(buf, size, "unknown flags");
        chunk(buf, 0)->flags = CAIRN_CHUNK_ZSTD;
        chunk(buf, 0)->stored_size = 0;
        expect_invalid_size(buf, size, "stored size 0");
        chunk(buf, 0)->stored_size = UINT32_MAX;
        expect_invalid_size(buf, size, "stored size");
        /* The stored-size limit is exact: 64 MiB + 64 MiB / 256. */
        struct cairn_manifest m;
        uint64_t blob_size = blob(buf, chunk(buf, 0)->blob)->size;
        blob(buf, chunk(buf, 0)->blob)->size = 1ull << 40;
        chunk(buf, 0)->stored_size = 67371008u;
        assert_int_equal(cairn_manifest_validate(buf, size, &m, NULL, 0), 0);
        chunk(buf, 0)->stored_size = 67371009u;
        expect_invalid_size(buf, size, "stored size 67371009");
        blob(buf, chunk(buf, 0)->blob)->size = blob_size;
        chunk(buf, 0)->stored_size = 51;
        chunk(buf, 0)->size = 0;
        expect_invalid_size(buf, size, "size 0 out of range");
        chunk(buf, 0)->size = CAIRN_CHUNK_MAX_LIMIT + 1;
        expect_invalid(buf, size, "out of range");
}
CORRUPT_TEST(chunk_fields)

static void blob_size_zero_body(void *buf, size_t size)
{
        blob(buf, 1)->size = 0;
        expect_invalid(buf, size, "blob 1: size is zero");
}
CORRUPT_TEST(blob_size_zero)

static void symlink_out_of_range_body(void *buf, size_t size)
{
        inode(buf, INO_LINK)->first = hdr(buf)->strtab_size - 2;
        expect_invalid_size(buf, size, "symlink target outside");
        inode(buf, INO_LINK)->first = UINT64_MAX - 2;
        expect_invalid(buf, size, "symlink target outside");
}
CORRUPT_TEST(symlink_out_of_range)

static void symlink_nul_body(void *buf, size_t size)
{
        strtab(buf)[inode(buf, INO_LINK)->first + 3] = '\0';
        expect_invalid(buf, size, "symlink target contains NUL");
}
CORRUPT_TEST(symlink_nul)

static void symlink_length_body(void *buf, size_t size)
{
        inode(buf, INO_LINK)->size = 3;
        expect_invalid_size(buf, size, "target length");
        inode(buf, INO_LINK)->size = 0;
        inode(buf, INO_LINK)->count = 0;
        expect_invalid_size(buf, size, "target length 0");
        inode(buf, INO_LINK)->size = CAIRN_SYMLINK_MAX + 1;
        inode(buf, INO_LINK)->count = CAIRN_SYMLINK_MAX + 1;
        expect_invalid(buf, size, "out of range");
}
CORRUPT_TEST(symlink_length)

/*
 * Every single-bit change of the header is rejected, except in chunk_min
 * and chunk_max, where many other values are legitimate parameters.
 */
static void header_byte_flips_body(void *buf, size_t size)
{
        const size_t min_at = offsetof(struct cairn_manifest_header, chunk_min);
        const size_t max_at = offsetof(struct cairn_manifest_header, chunk_max);
        struct cairn_manifest m;
        char err[256];
        int accepted = 0;

        for (size_t i = 0; i < CAIRN_MANIFEST_HEADER_SIZE; i++) {
                uint8_t *p = (uint8_t *)buf + i;
                uint8_t orig = *p;
                bool params = (i >= min_at && i < min_at + 4) || (i >= max_at && i < max_at + 4);
                for (int bit = 0; bit < 8; bit++) {
                        *p = orig ^ (uint8_t)(1u << bit);
                        err[0] = '\0';
                        int r = cairn_manifest_validate(buf, size, &m, err, sizeof(err));
                        if (r == 0 && params) {
                                accepted++;
                                continue;
                        }
                        if (r != -EINVAL)
                                fail_msg("header byte %zu bit %d: %d", i, bit, r);
                        assert_true(strlen(err) > 0);
                }
                *p = orig;
        }
        assert_true(accepted > 0);
        free(buf);
}
CORRUPT_TEST(header_byte_flips)

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_round_trip_header),
            cmocka_unit_test(test_lookup),
            cmocka_unit_test(test_resolve),
            cmocka_unit_test(test_dirent_at),
            cmocka_unit_test(test_find_chunk),
            cmocka_unit_test(test_find_chunk_many),
            cmocka_unit_test(test_stats),
            cmocka_unit_test(test_writer_blob_dedup),
            cmocka_unit_test(test_writer_rejects_invalid),
            cmocka_unit_test(test_validate_million),
            cmocka_unit_test(bad_magic),
            cmocka_unit_test(bad_version),
            cmocka_unit_test(unknown_flags),
            cmocka_unit_test(reserved_header),
            cmocka_unit_test(truncated_header),
            cmocka_unit_test(truncated_tables),
            cmocka_unit_test(total_size_mismatch),
            cmocka_unit_test(trailing_bytes),
            cmocka_unit_test(section_offset_lies),
            cmocka_unit_test(count_overflow),
            cmocka_unit_test(inode_counts),
            cmocka_unit_test(size_cap),
            cmocka_unit_test(unaligned),
            cmocka_unit_test(bad_chunk_params),
            cmocka_unit_test(logical_size),
            cmocka_unit_test(name_dot),
            cmocka_unit_test(name_dotdot),
            cmocka_unit_test(name_empty),
            cmocka_unit_test(name_slash),
            cmocka_unit_test(name_nul),
            cmocka_unit_test(names_unsorted),
            cmocka_unit_test(names_duplicate),
            cmocka_unit_test(names_prefix_order),
            cmocka_unit_test(name_outside_strtab),
            cmocka_unit_test(child_not_after_parent),
            cmocka_unit_test(child_is_root),
            cmocka_unit_test(child_out_of_range),
            cmocka_unit_test(inode_referenced_twice),
            cmocka_unit_test(orphan_inode),
            cmocka_unit_test(overlapping_dirs),
            cmocka_unit_test(wrong_parent),
            cmocka_unit_test(root_not_dir),
            cmocka_unit_test(bad_mode_type),
            cmocka_unit_test(inode_fields),
            cmocka_unit_test(dir_nlink),
            cmocka_unit_test(dir_range),
            cmocka_unit_test(chunk_past_blob),
            cmocka_unit_test(chunk_offsets_gap),
            cmocka_unit_test(chunk_offsets_start),
            cmocka_unit_test(file_size_mismatch),
            cmocka_unit_test(file_chunk_range),
            cmocka_unit_test(blob_index_out_of_range),
            cmocka_unit_test(raw_chunk_stored_size),
            cmocka_unit_test(chunk_fields),
            cmocka_unit_test(blob_size_zero),
            cmocka_unit_test(symlink_out_of_range),
            cmocka_unit_test(symlink_nul),
            cmocka_unit_test(symlink_length),
            cmocka_unit_test(header_byte_flips),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
