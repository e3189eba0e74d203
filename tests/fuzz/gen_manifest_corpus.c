/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the seed corpus of fuzz_manifest into a directory: small valid
 * manifests of several shapes, made with the real writer, and copies of
 * them broken in one specific way each, so that the fuzzer starts next to
 * both sides of every validation rule.  The seeds are checked in
 * (tests/fuzz/corpus/manifest/); this program is built only on demand,
 * when the format changes:
 *
 *   cmake --build BUILD --target cairn
 *   cc -std=gnu11 -Iinclude tests/fuzz/gen_manifest_corpus.c BUILD/libcairn.a \
 *      $(pkg-config --libs libzstd libcrypto) -lpthread -o /tmp/gen_manifest_corpus
 *   /tmp/gen_manifest_corpus tests/fuzz/corpus/manifest
 *
 * Output is deterministic: the same writer gives the same bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/manifest.h"

#define SEED_MAX 8192

static const char *out_dir;

static void die(const char *what, int r)
{
        fprintf(stderr, "gen_manifest_corpus: %s: %s\n", what, strerror(-r));
        exit(1);
}

static void write_seed(const char *name, const void *buf, size_t size)
{
        char path[4096];
        FILE *f;

        if (size > SEED_MAX) {
                fprintf(stderr, "gen_manifest_corpus: seed '%s' is %zu bytes (max %d)\n", name,
                        size, SEED_MAX);
                exit(1);
        }
        snprintf(path, sizeof(path), "%s/%s", out_dir, name);
        f = fopen(path, "wb");
        if (!f || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
                fprintf(stderr, "gen_manifest_corpus: cannot write '%s'\n", path);
                exit(1);
        }
}

/* A tree described breadth first, siblings sorted; parents precede children. */
struct node {
        const char *name;
        uint32_t parent;
        uint32_t mode;
        uint32_t nchunks;    /* files */
        uint32_t chunk_size; /* files: every chunk this size, the last one shorter by 1 */
        const char *target;  /* symlinks */
};

static void *build(const struct node *nodes, uint32_t n, uint32_t nblobs, size_t *ret_size)
{
        struct cairn_chunker_params p;
        struct cairn_manifest_writer *w;
        uint64_t fill[4] = {0};
        uint64_t chunk_no = 0;
        char err[256] = "";
        void *buf;
        int r;

        cairn_chunker_params_default(&p);
        r = cairn_manifest_writer_new(&p, &w);
        if (r < 0)
                die("writer", r);
        for (uint32_t i = 0; i < n; i++) {
                const struct node *nd = &nodes[i];
                struct cairn_manifest_inode in = {
                    .mode = nd->mode,
                    .uid = i,
                    .gid = 100,
                    .nlink = 1,
                    .mtime_sec = 1700000000 + i,
                    .mtime_nsec = i * 1000,
                    .parent = nd->parent,
                };
                if (S_ISREG(nd->mode)) {
                        in.first = cairn_manifest_writer_chunk_count(w);
                        in.count = nd->nchunks;
                        for (uint32_t k = 0; k < nd->nchunks; k++) {
                                uint32_t size = nd->chunk_size - (k + 1 == nd->nchunks);
                                uint32_t b = (uint32_t)(chunk_no % nblobs);
                                bool zstd = chunk_no % 3 == 0 && size > 8;
                                struct cairn_manifest_chunk c = {
                                    .file_offset = in.size,
                                    .blob_offset = fill[b],
                                    .blob = b,
                                    .stored_size = zstd ? size / 2 : size,
                                    .size = size,
                                    .flags = zstd ? CAIRN_CHUNK_ZSTD : 0,
                                };
                                memset(&c.id, (int)(chunk_no % 5), sizeof(c.id));
                                memcpy(c.id.bytes, &size, sizeof(size));
                                r = cairn_manifest_writer_add_chunk(w, &c, NULL);
                                if (r < 0)
                                        die("add chunk", r);
                                fill[b] += c.stored_size;
                                in.size += size;
                                chunk_no++;
                        }
                } else if (S_ISLNK(nd->mode)) {
                        in.size = in.count = strlen(nd->target);
                        r = cairn_manifest_writer_add_string(w, nd->target, in.size, &in.first);
                        if (r < 0)
                                die("add string", r);
                }
                r = cairn_manifest_writer_add_inode(w, &in, NULL);
                if (r < 0)
                        die("add inode", r);
        }
        for (uint32_t d = 0; d < n; d++) {
                if (!S_ISDIR(nodes[d].mode))
                        continue;
                uint64_t first = cairn_manifest_writer_dirent_count(w), count = 0;
                uint32_t subdirs = 0;
                for (uint32_t c = 1; c < n; c++) {
                        if (nodes[c].parent != d)
                                continue;
                        struct cairn_manifest_dirent e = {
                            .name_len = (uint32_t)strlen(nodes[c].name),
                            .inode = c,
                        };
                        r = cairn_manifest_writer_add_string(w, nodes[c].name, e.name_len,
                                                             &e.name_offset);
                        if (r < 0)
                                die("add string", r);
                        r = cairn_manifest_writer_add_dirent(w, &e, NULL);
                        if (r < 0)
                                die("add dirent", r);
                        count++;
                        subdirs += S_ISDIR(nodes[c].mode);
                }
                struct cairn_manifest_inode *in = cairn_manifest_writer_inode(w, d);
                in->first = first;
                in->size = in->count = count;
                in->nlink = 2 + subdirs;
        }
        for (uint32_t b = 0; b < nblobs; b++) {
                struct cairn_digest dg;
                memset(&dg, 0xa0 + (int)b, sizeof(dg));
                r = cairn_manifest_writer_add_blob(w, &dg, fill[b] ? fill[b] : 1, NULL);
                if (r < 0)
                        die("add blob", r);
        }
        r = cairn_manifest_writer_finish(w, &buf, ret_size, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "gen_manifest_corpus: finish: %s\n", err);
                exit(1);
        }
        cairn_manifest_writer_free(w);
        return buf;
}

#define D(name, parent)                                                                            \
        {                                                                                          \
                name, parent, S_IFDIR | 0755, 0, 0, NULL                                           \
        }
#define F(name, parent, n, sz)                                                                     \
        {                                                                                          \
                name, parent, S_IFREG | 0644, n, sz, NULL                                          \
        }
#define L(name, parent, t)                                                                         \
        {                                                                                          \
                name, parent, S_IFLNK | 0777, 0, 0, t                                              \
        }

static const struct node tree[] = {
    D("", 0),
    D("a", 0),
    F("empty", 0, 0, 0),
    F("file", 0, 3, 100),
    L("link", 0, "a/b/deep"),
    F("zz", 0, 1, 10),
    D("b", 1),
    F("x", 1, 1, 2),
    F("deep", 6, 2, 64),
    L("sp ace \xc3\xa9", 6, "/abs/target"),
};

static const struct node root_only[] = {D("", 0)};

static const struct node chain[] = {
    D("", 0),  D("1", 0), D("2", 1), D("3", 2),  D("4", 3),   D("5", 4),   D("6", 5),
    D("7", 6), D("8", 7), D("9", 8), D("10", 9), D("11", 10), D("12", 11), F("f", 12, 1, 9),
};

static const struct node chunky[] = {
    D("", 0),
    F("many", 0, 40, 33),
    F("one", 0, 1, 2),
};

static const struct node wide[] = {
    D("", 0),
    F("A", 0, 0, 0),
    F("B", 0, 0, 0),
    F("a", 0, 0, 0),
    F("aa", 0, 0, 0),
    F("aaa", 0, 0, 0),
    F("ab", 0, 1, 5),
    F("b", 0, 0, 0),
    L("c", 0, "."),
    L("d", 0, ".."),
    D("e", 0),
    D("f", 0),
    F("\xe2\x82\xac", 0, 1, 3),
};

/* Offsets of records inside a serialized manifest. */
static struct cairn_manifest_header *hdr(void *buf)
{
        return buf;
}

static struct cairn_manifest_inode *inode(void *buf, uint32_t i)
{
        return (struct cairn_manifest_inode *)((char *)buf + hdr(buf)->inodes_offset) + i;
}

static struct cairn_manifest_dirent *dirent(void *buf, uint64_t i)
{
        return (struct cairn_manifest_dirent *)((char *)buf + hdr(buf)->dirents_offset) + i;
}

static struct cairn_manifest_chunk *chunk(void *buf, uint64_t i)
{
        return (struct cairn_manifest_chunk *)((char *)buf + hdr(buf)->chunks_offset) + i;
}

static char *strtab(void *buf)
{
        return (char *)buf + hdr(buf)->strtab_offset;
}

/* Writes a broken variant: mutate a fresh copy of the tree seed, check it is rejected. */
static void write_broken(const char *name, void (*mutate)(void *buf, size_t *size))
{
        struct cairn_manifest m;
        size_t size;
        void *buf = build(tree, sizeof(tree) / sizeof(tree[0]), 2, &size);
        char err[256];

        mutate(buf, &size);
        if (cairn_manifest_validate(buf, size, &m, err, sizeof(err)) == 0) {
                fprintf(stderr, "gen_manifest_corpus: broken seed '%s' validates\n", name);
                exit(1);
        }
        write_seed(name, buf, size);
        free(buf);
}

static void m_magic(void *buf, size_t *size)
{
        (void)size;
        hdr(buf)->magic[0] = 'X';
}

static void m_truncated(void *buf, size_t *size)
{
        (void)buf;
        *size = 100;
}

static void m_short_tables(void *buf, size_t *size)
{
        *size = hdr(buf)->chunks_offset + 20;
        hdr(buf)->total_size = *size;
}

static void m_unsorted(void *buf, size_t *size)
{
        (void)size;
        struct cairn_manifest_dirent t = *dirent(buf, 1);
        dirent(buf, 1)->name_offset = dirent(buf, 2)->name_offset;
        dirent(buf, 1)->name_len = dirent(buf, 2)->name_len;
        dirent(buf, 2)->name_offset = t.name_offset;
        dirent(buf, 2)->name_len = t.name_len;
}

static void m_slash(void *buf, size_t *size)
{
        (void)size;
        strtab(buf)[dirent(buf, 2)->name_offset + 1] = '/';
}

static void m_dotdot(void *buf, size_t *size)
{
        (void)size;
        memcpy(strtab(buf) + dirent(buf, 4)->name_offset, "..", 2); /* "zz" */
}

static void m_cycle(void *buf, size_t *size)
{
        (void)size;
        dirent(buf, 7)->inode = 1; /* a/b/deep -> a */
}

static void m_twice(void *buf, size_t *size)
{
        (void)size;
        dirent(buf, 4)->inode = 2;
}

static void m_past_blob(void *buf, size_t *size)
{
        (void)size;
        chunk(buf, 2)->blob_offset += 1000;
}

static void m_gap(void *buf, size_t *size)
{
        (void)size;
        chunk(buf, 1)->file_offset++;
}

static void m_link_nul(void *buf, size_t *size)
{
        (void)size;
        strtab(buf)[inode(buf, 4)->first + 1] = '\0';
}

static void m_nlink(void *buf, size_t *size)
{
        (void)size;
        inode(buf, 0)->nlink = 2;
}

static void m_mode(void *buf, size_t *size)
{
        (void)size;
        inode(buf, 2)->mode = S_IFSOCK | 0644;
}

int main(int argc, char **argv)
{
        size_t size;
        void *buf;

        if (argc != 2) {
                fprintf(stderr, "usage: %s DIR\n", argv[0]);
                return 2;
        }
        out_dir = argv[1];
        if (mkdir(out_dir, 0755) < 0 && errno != EEXIST)
                die(out_dir, -errno);

#define VALID(name, nodes, nblobs)                                                                 \
        do {                                                                                       \
                buf = build(nodes, sizeof(nodes) / sizeof(nodes[0]), nblobs, &size);               \
                write_seed(name, buf, size);                                                       \
                free(buf);                                                                         \
        } while (0)
        VALID("valid-root-only", root_only, 1);
        VALID("valid-tree", tree, 2);
        VALID("valid-chain", chain, 1);
        VALID("valid-chunky", chunky, 3);
        VALID("valid-wide", wide, 1);

        write_broken("bad-magic", m_magic);
        write_broken("bad-truncated-header", m_truncated);
        write_broken("bad-short-tables", m_short_tables);
        write_broken("bad-unsorted", m_unsorted);
        write_broken("bad-slash", m_slash);
        write_broken("bad-dotdot", m_dotdot);
        write_broken("bad-cycle", m_cycle);
        write_broken("bad-twice", m_twice);
        write_broken("bad-past-blob", m_past_blob);
        write_broken("bad-chunk-gap", m_gap);
        write_broken("bad-link-nul", m_link_nul);
        write_broken("bad-nlink", m_nlink);
        write_broken("bad-mode", m_mode);
        return 0;
}
