/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the manifest validator.
 *
 * Validation is the only thing between untrusted bytes and code that indexes
 * the mapped tables without bounds checks.  So on every input that passes,
 * this target walks the whole volume through the read API exactly as a
 * mount would (readdir, lookup of every name, path resolution, offset to
 * chunk for every chunk boundary, symlink targets, the blob behind every
 * chunk) and checks the answers against each other.  A hole in the
 * validator then shows up as an ASan report or an abort() here instead of
 * a crash in cairnfs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Paths longer than this are not built; resolve() is still exercised on shorter ones. */
#define PATH_CAP 4096

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_manifest: check failed: %s (line %d)\n", #cond,      \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

/* Touches every byte so that ASan sees each read; the sum keeps it from being optimized out. */
static volatile uint64_t sink;

static void touch(const void *p, size_t len)
{
        const uint8_t *b = p;
        uint64_t s = 0;
        for (size_t i = 0; i < len; i++)
                s += b[i];
        sink += s;
}

/* Builds the path of ino from its parent chain; false when it would not fit. */
static bool build_path(const struct cairn_manifest *m, uint32_t ino, const uint32_t *name_of,
                       char *buf, size_t cap)
{
        size_t pos = cap - 1;
        buf[pos] = '\0';
        while (ino != 0) {
                const struct cairn_manifest_dirent *e = &m->dirents[name_of[ino]];
                if (e->name_len + 1 > pos)
                        return false;
                pos -= e->name_len;
                memcpy(buf + pos, cairn_manifest_string(m, e->name_offset), e->name_len);
                buf[--pos] = '/';
                ino = cairn_manifest_inode(m, ino)->parent;
        }
        memmove(buf, buf + pos, cap - pos);
        return true;
}

static void check_dir(const struct cairn_manifest *m, uint32_t ino, uint32_t *name_of)
{
        const struct cairn_manifest_inode *d = cairn_manifest_inode(m, ino);
        uint64_t subdirs = 0;

        for (uint64_t i = 0; i < d->count; i++) {
                const struct cairn_manifest_dirent *e = cairn_manifest_dirent_at(m, ino, i);
                CHECK(e != NULL);
                const char *name = cairn_manifest_string(m, e->name_offset);
                touch(name, e->name_len);
                CHECK(e->inode > ino && e->inode < cairn_manifest_inode_count(m));
                CHECK(cairn_manifest_inode(m, e->inode)->parent == ino);
                CHECK(name_of[e->inode] == UINT32_MAX);
                name_of[e->inode] = (uint32_t)(e - m->dirents);
                subdirs += S_ISDIR(cairn_manifest_inode(m, e->inode)->mode);

                uint32_t found = UINT32_MAX;
                CHECK(cairn_manifest_lookup(m, ino, name, e->name_len, &found) == 0);
                CHECK(found == e->inode);
                /* A near miss: a proper prefix is either another entry or absent. */
                if (e->name_len > 1) {
                        int r = cairn_manifest_lookup(m, ino, name, e->name_len - 1, &found);
                        CHECK(r == 0 || r == -ENOENT);
                }
        }
        CHECK(cairn_manifest_dirent_at(m, ino, d->count) == NULL);
        CHECK(d->nlink == 2 + subdirs);
}

static void check_file(const struct cairn_manifest *m, uint32_t ino)
{
        const struct cairn_manifest_inode *f = cairn_manifest_inode(m, ino);
        uint64_t c;

        for (uint64_t k = 0; k < f->count; k++) {
                const struct cairn_manifest_chunk *ch = &m->chunks[f->first + k];
                touch(ch, sizeof(*ch));
                const struct cairn_manifest_blob *b = &m->blobs[ch->blob];
                touch(b, sizeof(*b));
                CHECK(ch->blob_offset + ch->stored_size <= b->size);
                /* First, middle and last byte of each chunk map back to it. */
                uint64_t offs[3] = {ch->file_offset, ch->file_offset + ch->size / 2,
                                    ch->file_offset + ch->size - 1};
                for (int j = 0; j < 3; j++) {
                        CHECK(cairn_manifest_find_chunk(m, ino, offs[j], &c) == 0);
                        CHECK(c == f->first + k);
                }
        }
        CHECK(cairn_manifest_find_chunk(m, ino, f->size, &c) == -ENXIO);
        CHECK(cairn_manifest_find_chunk(m, ino, UINT64_MAX, &c) == -ENXIO);
}

static void exercise(const struct cairn_manifest *m)
{
        uint32_t n = cairn_manifest_inode_count(m);
        /* dirent index naming each inode, found on the way down (parents come first). */
        uint32_t *name_of = malloc((size_t)n * sizeof(*name_of));
        char *path = malloc(PATH_CAP);
        uint64_t logical = 0;

        if (!name_of || !path)
                goto out;
        memset(name_of, 0xff, (size_t)n * sizeof(*name_of));

        for (uint32_t ino = 0; ino < n; ino++) {
                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
                uint64_t c;
                if (ino > 0)
                        CHECK(name_of[ino] != UINT32_MAX);
                if (S_ISDIR(in->mode)) {
                        check_dir(m, ino, name_of);
                        CHECK(cairn_manifest_find_chunk(m, ino, 0, &c) == -EISDIR);
                } else if (S_ISREG(in->mode)) {
                        check_file(m, ino);
                        logical += in->size;
                        CHECK(cairn_manifest_dirent_at(m, ino, 0) == NULL);
                } else {
                        CHECK(S_ISLNK(in->mode));
                        const char *target = cairn_manifest_string(m, in->first);
                        touch(target, in->size);
                        CHECK(memchr(target, '\0', in->size) == NULL);
                        CHECK(cairn_manifest_find_chunk(m, ino, 0, &c) == -EINVAL);
                }
                if (build_path(m, ino, name_of, path, PATH_CAP)) {
                        uint32_t found = UINT32_MAX;
                        CHECK(cairn_manifest_resolve(m, path, &found) == 0);
                        CHECK(found == ino);
                }
        }
        CHECK(logical == m->hdr->logical_size);

        struct cairn_manifest_stats st;
        if (cairn_manifest_stats(m, m, &st) == 0) {
                CHECK(st.dirs + st.files + st.symlinks == n);
                CHECK(st.unique_chunks <= st.chunk_refs);
                CHECK(st.base_shared_chunks == st.unique_chunks);
                CHECK(st.blobs <= m->hdr->blob_count);
        }
out:
        free(path);
        free(name_of);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct cairn_manifest m;
        char err[256];
        void *copy;

        /* The validator requires 8-byte alignment; libFuzzer does not promise it. */
        copy = malloc(size ? size : 1);
        if (!copy)
                return 0;
        memcpy(copy, data, size);
        err[0] = '\0';
        int r = cairn_manifest_validate(copy, size, &m, err, sizeof(err));
        if (r == 0) {
                CHECK(m.base == copy && m.size == size);
                exercise(&m);
        } else {
                CHECK(r == -EINVAL || r == -EFBIG || r == -ENOMEM);
                CHECK(r == -ENOMEM || (err[0] != '\0' && strchr(err, '\n') == NULL));
        }
        free(copy);
        return 0;
}
