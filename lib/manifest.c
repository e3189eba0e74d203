/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest: strict validation, in-place lookups, the writer and the
 * summary figures.
 *
 * Readers never trust a manifest: cairn_manifest_validate() checks every
 * offset, length, reference and tree invariant once, in one linear pass
 * over each table, with a bitmap of inode_count bits as its only heap.
 * Everything else in this file (lookup, resolve, readdir, find_chunk) may
 * then index the mapped tables without further bounds checks; that split
 * is what lets a mount of a million files cost no per-file heap.
 *
 * docs/FORMAT.md is the normative description of the bytes checked here.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <zstd.h>

#include "cairn/manifest.h"

/* The structs are the on-store records: pin their layout at build time. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the manifest is used in place and is little-endian: big-endian hosts need a port");
_Static_assert(sizeof(struct cairn_manifest_header) == CAIRN_MANIFEST_HEADER_SIZE, "header size");
_Static_assert(sizeof(struct cairn_manifest_inode) == CAIRN_MANIFEST_INODE_SIZE, "inode size");
_Static_assert(sizeof(struct cairn_manifest_dirent) == CAIRN_MANIFEST_DIRENT_SIZE, "dirent size");
_Static_assert(sizeof(struct cairn_manifest_chunk) == CAIRN_MANIFEST_CHUNK_SIZE, "chunk size");
_Static_assert(sizeof(struct cairn_manifest_blob) == CAIRN_MANIFEST_BLOB_SIZE, "blob size");
_Static_assert(sizeof(struct cairn_digest) == CAIRN_DIGEST_SIZE, "digest size");
_Static_assert(CAIRN_MANIFEST_INODE_SIZE % 8 == 0 && CAIRN_MANIFEST_DIRENT_SIZE % 8 == 0 &&
                   CAIRN_MANIFEST_CHUNK_SIZE % 8 == 0 && CAIRN_MANIFEST_BLOB_SIZE % 8 == 0 &&
                   CAIRN_MANIFEST_HEADER_SIZE % 8 == 0,
               "record sizes keep every table 8-byte aligned");

#define HDR_OFF(f) offsetof(struct cairn_manifest_header, f)
_Static_assert(HDR_OFF(magic) == 0 && HDR_OFF(version) == 8 && HDR_OFF(flags) == 12 &&
                   HDR_OFF(total_size) == 16 && HDR_OFF(inode_count) == 24 &&
                   HDR_OFF(blob_count) == 28 && HDR_OFF(dirent_count) == 32 &&
                   HDR_OFF(chunk_count) == 40 && HDR_OFF(strtab_size) == 48 &&
                   HDR_OFF(inodes_offset) == 56 && HDR_OFF(dirents_offset) == 64 &&
                   HDR_OFF(chunks_offset) == 72 && HDR_OFF(blobs_offset) == 80 &&
                   HDR_OFF(strtab_offset) == 88 && HDR_OFF(chunk_min) == 96 &&
                   HDR_OFF(chunk_avg) == 100 && HDR_OFF(chunk_max) == 104 &&
                   HDR_OFF(reserved0) == 108 && HDR_OFF(logical_size) == 112 &&
                   HDR_OFF(profile_count) == 120,
               "header field offsets");
#define INO_OFF(f) offsetof(struct cairn_manifest_inode, f)
_Static_assert(INO_OFF(mode) == 0 && INO_OFF(uid) == 4 && INO_OFF(gid) == 8 &&
                   INO_OFF(nlink) == 12 && INO_OFF(mtime_sec) == 16 && INO_OFF(mtime_nsec) == 24 &&
                   INO_OFF(parent) == 28 && INO_OFF(size) == 32 && INO_OFF(first) == 40 &&
                   INO_OFF(count) == 48 && INO_OFF(reserved) == 56,
               "inode field offsets");
#define DIRENT_OFF(f) offsetof(struct cairn_manifest_dirent, f)
_Static_assert(DIRENT_OFF(name_offset) == 0 && DIRENT_OFF(name_len) == 8 && DIRENT_OFF(inode) == 12,
               "dirent field offsets");
#define CHUNK_OFF(f) offsetof(struct cairn_manifest_chunk, f)
_Static_assert(CHUNK_OFF(id) == 0 && CHUNK_OFF(file_offset) == 32 && CHUNK_OFF(blob_offset) == 40 &&
                   CHUNK_OFF(blob) == 48 && CHUNK_OFF(stored_size) == 52 && CHUNK_OFF(size) == 56 &&
                   CHUNK_OFF(flags) == 60,
               "chunk field offsets");
_Static_assert(offsetof(struct cairn_manifest_blob, digest) == 0 &&
                   offsetof(struct cairn_manifest_blob, size) == 32,
               "blob field offsets");

/*
 * Largest stored size of one chunk: a zstd frame of the largest chunk may
 * exceed it a little.  The figure is part of the format (docs/FORMAT.md),
 * so it is fixed here rather than taken from whatever zstd.h is installed;
 * the assertion proves zstd's own bound fits under it.
 */
#define STORED_SIZE_MAX ((uint64_t)CAIRN_CHUNK_MAX_LIMIT + CAIRN_CHUNK_MAX_LIMIT / 256)
_Static_assert(STORED_SIZE_MAX == 67371008u, "the limit docs/FORMAT.md states");
_Static_assert(ZSTD_COMPRESSBOUND(CAIRN_CHUNK_MAX_LIMIT) <= STORED_SIZE_MAX,
               "a zstd frame of the largest chunk always fits");

/* Mode bits a manifest may carry besides the file type. */
#define MODE_PERM_MASK 07777u

/* ------------------------------------------------------------------------------------------ */
/* Validation                                                                                 */

__attribute__((format(printf, 3, 4))) static int fail(char *errbuf, size_t errlen, const char *fmt,
                                                      ...)
{
        if (errbuf && errlen > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errbuf, errlen, fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/*
 * A name made safe for a one-line message: names may hold any byte but '/'
 * and NUL, so control and non-ASCII bytes are shown as \xNN, and long names
 * are cut.
 */
#define QUOTE_MAX 48
struct quoted {
        char s[4 * QUOTE_MAX + 4];
};

static const char *quote(struct quoted *q, const char *name, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;

        for (size_t i = 0; i < len && i < QUOTE_MAX; i++) {
                unsigned char c = (unsigned char)name[i];
                if (c >= 0x20 && c < 0x7f && c != '\\') {
                        q->s[o++] = (char)c;
                } else {
                        q->s[o++] = '\\';
                        q->s[o++] = 'x';
                        q->s[o++] = hex[c >> 4];
                        q->s[o++] = hex[c & 15];
                }
        }
        if (len > QUOTE_MAX) {
                memcpy(q->s + o, "...", 3);
                o += 3;
        }
        q->s[o] = '\0';
        return q->s;
}

/* Byte order of names: memcmp over the common prefix, then the shorter one first. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
        int r = memcmp(a, b, alen < blen ? alen : blen);
        if (r != 0)
                return r;
        return alen < blen ? -1 : alen > blen;
}

/* True when [off, off + len) lies inside [0, limit), without overflow. */
static bool range_ok(uint64_t off, uint64_t len, uint64_t limit)
{
        return off <= limit && len <= limit - off;
}

/* Checks a table: it starts exactly at expect and holds count records of rec bytes. */
static int check_table(const char *what, uint64_t offset, uint64_t expect, uint64_t count,
                       uint64_t rec, uint64_t size, uint64_t *ret_end, char *errbuf, size_t errlen)
{
        uint64_t len, end;

        if (offset != expect)
                return fail(errbuf, errlen,
                            "%s table at offset %llu, expected %llu (tables must be contiguous)",
                            what, (unsigned long long)offset, (unsigned long long)expect);
        if (__builtin_mul_overflow(count, rec, &len) || __builtin_add_overflow(offset, len, &end))
                return fail(errbuf, errlen, "%s table size overflows (%llu records)", what,
                            (unsigned long long)count);
        if (end > size)
                return fail(errbuf, errlen,
                            "%s table (%llu records) extends past the end of the manifest (%llu > "
                            "%llu bytes)",
                            what, (unsigned long long)count, (unsigned long long)end,
                            (unsigned long long)size);
        *ret_end = end;
        return 0;
}

static int validate_header(const struct cairn_manifest_header *h, size_t size, char *errbuf,
                           size_t errlen)
{
        uint64_t end = 0; /* check_table sets it; gcc -O3 cannot see that fail() is < 0 */
        int r;

        if (memcmp(h->magic, CAIRN_MANIFEST_MAGIC, sizeof(h->magic)) != 0)
                return fail(errbuf, errlen, "bad magic (not a cairn manifest)");
        if (h->version != CAIRN_MANIFEST_VERSION)
                return fail(errbuf, errlen, "unsupported manifest version %u (this reader: %u)",
                            h->version, CAIRN_MANIFEST_VERSION);
        if (h->flags != 0)
                return fail(errbuf, errlen, "unknown header flags 0x%x", h->flags);
        if (h->reserved0 != 0)
                return fail(errbuf, errlen, "reserved header fields are not zero");
        if (h->total_size != size)
                return fail(errbuf, errlen, "total_size %llu does not match the %zu bytes read",
                            (unsigned long long)h->total_size, size);
        if (h->inode_count == 0)
                return fail(errbuf, errlen, "no inodes (the root directory is missing)");
        if (h->inode_count > CAIRN_MANIFEST_MAX_INODES)
                return fail(errbuf, errlen, "too many inodes (%u)", h->inode_count);
        if (h->dirent_count != (uint64_t)h->inode_count - 1)
                return fail(errbuf, errlen, "dirent_count %llu, expected inode_count - 1 = %u",
                            (unsigned long long)h->dirent_count, h->inode_count - 1);

        r = check_table("inode", h->inodes_offset, CAIRN_MANIFEST_HEADER_SIZE, h->inode_count,
                        CAIRN_MANIFEST_INODE_SIZE, size, &end, errbuf, errlen);
        if (r < 0)
                return r;
        r = check_table("dirent", h->dirents_offset, end, h->dirent_count,
                        CAIRN_MANIFEST_DIRENT_SIZE, size, &end, errbuf, errlen);
        if (r < 0)
                return r;
        r = check_table("chunk", h->chunks_offset, end, h->chunk_count, CAIRN_MANIFEST_CHUNK_SIZE,
                        size, &end, errbuf, errlen);
        if (r < 0)
                return r;
        r = check_table("blob", h->blobs_offset, end, h->blob_count, CAIRN_MANIFEST_BLOB_SIZE, size,
                        &end, errbuf, errlen);
        if (r < 0)
                return r;
        r = check_table("string", h->strtab_offset, end, h->strtab_size, 1, size, &end, errbuf,
                        errlen);
        if (r < 0)
                return r;
        if (h->profile_count) {
                /* The profile table starts at the next multiple of 8; the gap is zeros. */
                uint64_t start = (end + 7) & ~(uint64_t)7;
                for (uint64_t i = end; i < start && i < size; i++)
                        if (((const uint8_t *)h)[i] != 0)
                                return fail(errbuf, errlen, "padding before the profile is not zero");
                if (h->profile_count > h->chunk_count)
                        return fail(errbuf, errlen, "profile has %llu entries for %llu chunks",
                                    (unsigned long long)h->profile_count,
                                    (unsigned long long)h->chunk_count);
                r = check_table("profile", start, start, h->profile_count, 8, size, &end, errbuf,
                                errlen);
                if (r < 0)
                        return r;
        }
        if (end != size)
                return fail(errbuf, errlen, "%llu trailing bytes after the last table",
                            (unsigned long long)(size - end));

        struct cairn_chunker_params p = {
            .min_size = h->chunk_min,
            .avg_size = h->chunk_avg,
            .max_size = h->chunk_max,
        };
        if (cairn_chunker_params_validate(&p) < 0)
                return fail(errbuf, errlen, "invalid chunking parameters min %u avg %u max %u",
                            h->chunk_min, h->chunk_avg, h->chunk_max);
        return 0;
}

static int validate_blobs(const struct cairn_manifest *m, char *errbuf, size_t errlen)
{
        for (uint32_t b = 0; b < m->hdr->blob_count; b++)
                if (m->blobs[b].size == 0)
                        return fail(errbuf, errlen, "blob %u: size is zero", b);
        return 0;
}

/* Each chunk record on its own; the files check how their chunks line up. */
static int validate_chunks(const struct cairn_manifest *m, char *errbuf, size_t errlen)
{
        uint64_t n = m->hdr->chunk_count;
        uint32_t nblobs = m->hdr->blob_count;

        for (uint64_t i = 0; i < n; i++) {
                const struct cairn_manifest_chunk *c = &m->chunks[i];
                unsigned long long ci = (unsigned long long)i;

                if (c->size == 0 || c->size > CAIRN_CHUNK_MAX_LIMIT)
                        return fail(errbuf, errlen, "chunk %llu: size %u out of range 1..%u", ci,
                                    c->size, CAIRN_CHUNK_MAX_LIMIT);
                if (c->stored_size == 0 || c->stored_size > STORED_SIZE_MAX)
                        return fail(errbuf, errlen, "chunk %llu: stored size %u out of range", ci,
                                    c->stored_size);
                if (c->flags & ~CAIRN_CHUNK_ZSTD)
                        return fail(errbuf, errlen, "chunk %llu: unknown flags 0x%x", ci, c->flags);
                if (!(c->flags & CAIRN_CHUNK_ZSTD) && c->stored_size != c->size)
                        return fail(errbuf, errlen,
                                    "chunk %llu: raw chunk with stored size %u != size %u", ci,
                                    c->stored_size, c->size);
                if (c->blob >= nblobs)
                        return fail(errbuf, errlen, "chunk %llu: blob %u out of range (%u blobs)",
                                    ci, c->blob, nblobs);
                if (!range_ok(c->blob_offset, c->stored_size, m->blobs[c->blob].size))
                        return fail(errbuf, errlen,
                                    "chunk %llu: extends past blob %u (offset %llu + %u > %llu)",
                                    ci, c->blob, (unsigned long long)c->blob_offset, c->stored_size,
                                    (unsigned long long)m->blobs[c->blob].size);
        }
        return 0;
}

struct tree_check {
        uint8_t *seen;       /* bit per inode: referenced by a dirent already */
        uint64_t referenced; /* dirents accepted so far */
        uint64_t logical;    /* sum of regular file sizes */
};

static int validate_dir(const struct cairn_manifest *m, uint32_t ino, struct tree_check *tc,
                        char *errbuf, size_t errlen)
{
        const struct cairn_manifest_inode *d = &m->inodes[ino];
        uint64_t strtab_size = m->hdr->strtab_size;
        uint32_t ninodes = m->hdr->inode_count;
        const char *prev = NULL;
        size_t prev_len = 0;
        uint64_t subdirs = 0;
        struct quoted qa, qb;

        if (!range_ok(d->first, d->count, m->hdr->dirent_count))
                return fail(errbuf, errlen,
                            "inode %u: entries %llu+%llu out of range (%llu dirents)", ino,
                            (unsigned long long)d->first, (unsigned long long)d->count,
                            (unsigned long long)m->hdr->dirent_count);
        if (d->size != d->count)
                return fail(errbuf, errlen, "inode %u: directory size %llu != entry count %llu",
                            ino, (unsigned long long)d->size, (unsigned long long)d->count);

        for (uint64_t k = 0; k < d->count; k++) {
                const struct cairn_manifest_dirent *e = &m->dirents[d->first + k];
                unsigned long long ek = (unsigned long long)k;

                if (e->name_len == 0 || e->name_len > CAIRN_NAME_MAX)
                        return fail(errbuf, errlen, "inode %u: entry %llu: name length %u", ino, ek,
                                    e->name_len);
                if (!range_ok(e->name_offset, e->name_len, strtab_size))
                        return fail(errbuf, errlen,
                                    "inode %u: entry %llu: name outside the string table", ino, ek);
                const char *name = m->strtab + e->name_offset;
                if (memchr(name, '/', e->name_len))
                        return fail(errbuf, errlen, "inode %u: entry %llu: name contains '/'", ino,
                                    ek);
                if (memchr(name, '\0', e->name_len))
                        return fail(errbuf, errlen, "inode %u: entry %llu: name contains NUL", ino,
                                    ek);
                if (name[0] == '.' && (e->name_len == 1 || (e->name_len == 2 && name[1] == '.')))
                        return fail(errbuf, errlen, "inode %u: entry %llu: name is '%s'", ino, ek,
                                    quote(&qa, name, e->name_len));
                if (prev && name_cmp(prev, prev_len, name, e->name_len) >= 0)
                        return fail(errbuf, errlen,
                                    "inode %u: entry %llu: '%s' is not after '%s' "
                                    "(entries must be sorted and unique)",
                                    ino, ek, quote(&qa, name, e->name_len),
                                    quote(&qb, prev, prev_len));
                prev = name;
                prev_len = e->name_len;

                uint32_t child = e->inode;
                /* Children have higher indices than their parent, so the tree has no cycle. */
                if (child <= ino || child >= ninodes)
                        return fail(errbuf, errlen,
                                    "inode %u: entry '%s' refers to inode %u (must be in "
                                    "%u..%u)",
                                    ino, quote(&qa, name, e->name_len), child, ino + 1,
                                    ninodes - 1);
                if (tc->seen[child >> 3] & (1u << (child & 7)))
                        return fail(errbuf, errlen,
                                    "inode %u: entry '%s': inode %u is referenced twice", ino,
                                    quote(&qa, name, e->name_len), child);
                tc->seen[child >> 3] |= (uint8_t)(1u << (child & 7));
                tc->referenced++;

                const struct cairn_manifest_inode *ci = &m->inodes[child];
                if (ci->parent != ino)
                        return fail(errbuf, errlen,
                                    "inode %u: parent is %u, but it is entry '%s' of inode %u",
                                    child, ci->parent, quote(&qa, name, e->name_len), ino);
                if (S_ISDIR(ci->mode))
                        subdirs++;
        }
        if ((uint64_t)d->nlink != 2 + subdirs)
                return fail(errbuf, errlen,
                            "inode %u: nlink %u, expected %llu (2 + subdirectories)", ino, d->nlink,
                            (unsigned long long)(2 + subdirs));
        return 0;
}

static int validate_file(const struct cairn_manifest *m, uint32_t ino, struct tree_check *tc,
                         char *errbuf, size_t errlen)
{
        const struct cairn_manifest_inode *f = &m->inodes[ino];
        uint64_t expect = 0;

        if (f->nlink != 1)
                return fail(errbuf, errlen, "inode %u: nlink %u, expected 1", ino, f->nlink);
        if (!range_ok(f->first, f->count, m->hdr->chunk_count))
                return fail(errbuf, errlen, "inode %u: chunks %llu+%llu out of range (%llu chunks)",
                            ino, (unsigned long long)f->first, (unsigned long long)f->count,
                            (unsigned long long)m->hdr->chunk_count);
        if ((f->count == 0) != (f->size == 0))
                return fail(errbuf, errlen, "inode %u: size %llu with %llu chunks", ino,
                            (unsigned long long)f->size, (unsigned long long)f->count);
        for (uint64_t k = 0; k < f->count; k++) {
                const struct cairn_manifest_chunk *c = &m->chunks[f->first + k];
                if (c->file_offset != expect)
                        return fail(errbuf, errlen,
                                    "inode %u: chunk %llu starts at file offset %llu, expected "
                                    "%llu",
                                    ino, (unsigned long long)k, (unsigned long long)c->file_offset,
                                    (unsigned long long)expect);
                if (__builtin_add_overflow(expect, c->size, &expect))
                        return fail(errbuf, errlen, "inode %u: chunk sizes overflow", ino);
        }
        if (expect != f->size)
                return fail(errbuf, errlen, "inode %u: size %llu != sum of chunk sizes %llu", ino,
                            (unsigned long long)f->size, (unsigned long long)expect);
        if (__builtin_add_overflow(tc->logical, f->size, &tc->logical))
                return fail(errbuf, errlen, "inode %u: total file size overflows", ino);
        return 0;
}

static int validate_symlink(const struct cairn_manifest *m, uint32_t ino, char *errbuf,
                            size_t errlen)
{
        const struct cairn_manifest_inode *l = &m->inodes[ino];

        if (l->nlink != 1)
                return fail(errbuf, errlen, "inode %u: nlink %u, expected 1", ino, l->nlink);
        if (l->count == 0 || l->count > CAIRN_SYMLINK_MAX)
                return fail(errbuf, errlen, "inode %u: symlink target length %llu out of range",
                            ino, (unsigned long long)l->count);
        if (l->size != l->count)
                return fail(errbuf, errlen, "inode %u: symlink size %llu != target length %llu",
                            ino, (unsigned long long)l->size, (unsigned long long)l->count);
        if (!range_ok(l->first, l->count, m->hdr->strtab_size))
                return fail(errbuf, errlen, "inode %u: symlink target outside the string table",
                            ino);
        if (memchr(m->strtab + l->first, '\0', l->count))
                return fail(errbuf, errlen, "inode %u: symlink target contains NUL", ino);
        return 0;
}

static int validate_inodes(const struct cairn_manifest *m, struct tree_check *tc, char *errbuf,
                           size_t errlen)
{
        uint32_t n = m->hdr->inode_count;
        int r;

        for (uint32_t i = 0; i < n; i++) {
                const struct cairn_manifest_inode *in = &m->inodes[i];
                uint32_t type = in->mode & S_IFMT;

                if (in->mode & ~(uint32_t)(S_IFMT | MODE_PERM_MASK))
                        return fail(errbuf, errlen, "inode %u: unknown mode bits 0%o", i, in->mode);
                if (in->mtime_nsec >= 1000000000u)
                        return fail(errbuf, errlen, "inode %u: mtime nanoseconds %u >= 1e9", i,
                                    in->mtime_nsec);
                if (in->reserved != 0)
                        return fail(errbuf, errlen, "inode %u: reserved field is not zero", i);
                if (i == 0 && (type != S_IFDIR || in->parent != 0))
                        return fail(errbuf, errlen,
                                    "inode 0: the root must be a directory with parent 0");

                switch (type) {
                case S_IFDIR:
                        r = validate_dir(m, i, tc, errbuf, errlen);
                        break;
                case S_IFREG:
                        r = validate_file(m, i, tc, errbuf, errlen);
                        break;
                case S_IFLNK:
                        r = validate_symlink(m, i, errbuf, errlen);
                        break;
                default:
                        r = fail(errbuf, errlen,
                                 "inode %u: file type 0%o is not a directory, file or symlink", i,
                                 type);
                        break;
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

int cairn_manifest_validate(const void *base, size_t size, struct cairn_manifest *ret_view,
                            char *errbuf, size_t errlen)
{
        const struct cairn_manifest_header *h = base;
        struct cairn_manifest m;
        struct tree_check tc = {0};
        int r;

        if ((uint64_t)size > CAIRN_MANIFEST_MAX_SIZE) {
                if (errbuf && errlen > 0)
                        snprintf(errbuf, errlen, "manifest of %zu bytes exceeds the limit of %llu",
                                 size, (unsigned long long)CAIRN_MANIFEST_MAX_SIZE);
                return -EFBIG;
        }
        if (size < CAIRN_MANIFEST_HEADER_SIZE)
                return fail(errbuf, errlen, "truncated header (%zu of %u bytes)", size,
                            CAIRN_MANIFEST_HEADER_SIZE);
        /* The records are read in place; an unaligned buffer would be undefined behaviour. */
        if ((uintptr_t)base % 8 != 0)
                return fail(errbuf, errlen, "manifest buffer is not 8-byte aligned");

        r = validate_header(h, size, errbuf, errlen);
        if (r < 0)
                return r;

        const uint8_t *b = base;
        m = (struct cairn_manifest){
            .base = b,
            .size = size,
            .hdr = h,
            .inodes = (const void *)(b + h->inodes_offset),
            .dirents = (const void *)(b + h->dirents_offset),
            .chunks = (const void *)(b + h->chunks_offset),
            .blobs = (const void *)(b + h->blobs_offset),
            .strtab = (const char *)(b + h->strtab_offset),
            .profile_count = h->profile_count,
        };
        if (h->profile_count) {
                m.profile = (const void *)(b + ((h->strtab_offset + h->strtab_size + 7) &
                                                ~(uint64_t)7));
                for (uint64_t i = 0; i < h->profile_count; i++)
                        if (m.profile[i] >= h->chunk_count)
                                return fail(errbuf, errlen,
                                            "profile entry %llu names chunk %llu of %llu",
                                            (unsigned long long)i,
                                            (unsigned long long)m.profile[i],
                                            (unsigned long long)h->chunk_count);
        }

        r = validate_blobs(&m, errbuf, errlen);
        if (r < 0)
                return r;
        r = validate_chunks(&m, errbuf, errlen);
        if (r < 0)
                return r;

        /* inode_count * 64 <= size <= 4 GiB bounds this allocation by size / 512. */
        tc.seen = calloc((size_t)h->inode_count / 8 + 1, 1);
        if (!tc.seen)
                return -ENOMEM;
        r = validate_inodes(&m, &tc, errbuf, errlen);
        if (r < 0)
                goto out;
        /* Each dirent named a distinct non-root inode; all of them must be named. */
        if (tc.referenced != (uint64_t)h->inode_count - 1) {
                uint32_t orphan = 1;
                while (orphan < h->inode_count && (tc.seen[orphan >> 3] & (1u << (orphan & 7))))
                        orphan++;
                r = fail(errbuf, errlen, "inode %u is not in any directory", orphan);
                goto out;
        }
        if (tc.logical != h->logical_size) {
                r = fail(errbuf, errlen, "logical_size %llu != sum of file sizes %llu",
                         (unsigned long long)h->logical_size, (unsigned long long)tc.logical);
                goto out;
        }
        *ret_view = m;
        r = 0;
out:
        free(tc.seen);
        return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading a validated manifest                                                               */

int cairn_manifest_lookup(const struct cairn_manifest *m, uint32_t dir, const char *name,
                          size_t name_len, uint32_t *ret_ino)
{
        if (dir >= m->hdr->inode_count)
                return -ENOENT;
        const struct cairn_manifest_inode *d = &m->inodes[dir];
        if (!S_ISDIR(d->mode))
                return -ENOTDIR;
        if (name_len == 0 || name_len > CAIRN_NAME_MAX)
                return -ENOENT;

        const struct cairn_manifest_dirent *ents = &m->dirents[d->first];
        uint64_t lo = 0, hi = d->count;
        while (lo < hi) {
                uint64_t mid = lo + (hi - lo) / 2;
                const struct cairn_manifest_dirent *e = &ents[mid];
                int c = name_cmp(m->strtab + e->name_offset, e->name_len, name, name_len);
                if (c == 0) {
                        *ret_ino = e->inode;
                        return 0;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENOENT;
}

int cairn_manifest_resolve(const struct cairn_manifest *m, const char *path, uint32_t *ret_ino)
{
        uint32_t ino = 0;
        const char *p = path;

        for (;;) {
                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                const char *end = strchrnul(p, '/');
                int r = cairn_manifest_lookup(m, ino, p, (size_t)(end - p), &ino);
                if (r < 0)
                        return r;
                p = end;
        }
        *ret_ino = ino;
        return 0;
}

const struct cairn_manifest_dirent *cairn_manifest_dirent_at(const struct cairn_manifest *m,
                                                             uint32_t dir, uint64_t i)
{
        if (dir >= m->hdr->inode_count)
                return NULL;
        const struct cairn_manifest_inode *d = &m->inodes[dir];
        if (!S_ISDIR(d->mode) || i >= d->count)
                return NULL;
        return &m->dirents[d->first + i];
}

int cairn_manifest_find_chunk(const struct cairn_manifest *m, uint32_t ino, uint64_t off,
                              uint64_t *ret_chunk)
{
        if (ino >= m->hdr->inode_count)
                return -EINVAL;
        const struct cairn_manifest_inode *f = &m->inodes[ino];
        if (S_ISDIR(f->mode))
                return -EISDIR;
        if (!S_ISREG(f->mode))
                return -EINVAL;
        if (off >= f->size)
                return -ENXIO;

        /* The last chunk whose file_offset <= off; chunk 0 starts at 0, so there is one. */
        const struct cairn_manifest_chunk *c = &m->chunks[f->first];
        uint64_t lo = 0, hi = f->count;
        while (hi - lo > 1) {
                uint64_t mid = lo + (hi - lo) / 2;
                if (c[mid].file_offset <= off)
                        lo = mid;
                else
                        hi = mid;
        }
        *ret_chunk = f->first + lo;
        return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Digest hash sets (writer blob dedup, stats)                                                */

/*
 * Digests in a manifest are attacker-controlled until proven otherwise, so
 * the hash mixes all 32 bytes with a per-set random seed: crafted ids
 * cannot force every entry into one probe sequence.
 */
static uint64_t digest_hash(const struct cairn_digest *d, uint64_t seed)
{
        uint64_t h = seed;
        for (int i = 0; i < 4; i++) {
                uint64_t w;
                memcpy(&w, d->bytes + 8 * i, 8);
                h ^= w;
                h *= 0x9e3779b97f4a7c15ull;
                h ^= h >> 29;
        }
        h *= 0xbf58476d1ce4e5b9ull;
        return h ^ (h >> 32);
}

static uint64_t hash_seed(void)
{
        uint64_t seed;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
                seed = (uint64_t)(uintptr_t)&seed * 0x94d049bb133111ebull;
        return seed;
}

/* Smallest power of two >= 2 * n (load factor <= 1/2), at least 16. */
static int table_capacity(uint64_t n, size_t *ret_cap)
{
        size_t cap = 16;
        while (cap / 2 < n) {
                if (cap > SIZE_MAX / 4)
                        return -ENOMEM;
                cap *= 2;
        }
        *ret_cap = cap;
        return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                     */

struct cairn_manifest_writer {
        struct cairn_chunker_params params;

        struct cairn_manifest_inode *inodes;
        size_t n_inodes, cap_inodes;
        struct cairn_manifest_dirent *dirents;
        size_t n_dirents, cap_dirents;
        struct cairn_manifest_chunk *chunks;
        size_t n_chunks, cap_chunks;
        struct cairn_manifest_blob *blobs;
        size_t n_blobs, cap_blobs;
        char *strtab;
        size_t n_strtab, cap_strtab;
        uint64_t *profile;
        size_t n_profile;

        /* Open addressing over blob digests: slot holds blob index + 1, 0 = empty. */
        uint32_t *blob_slots;
        size_t blob_slot_cap;
        uint64_t blob_seed;
};

/* Makes room for one more element (or extra bytes) in a growable array, doubling. */
static int grow(void **arr, size_t *cap, size_t used, size_t extra, size_t elem)
{
        size_t need, ncap, bytes;

        if (__builtin_add_overflow(used, extra, &need))
                return -ENOMEM;
        if (need <= *cap)
                return 0;
        ncap = *cap ? *cap : 64;
        while (ncap < need) {
                if (__builtin_mul_overflow(ncap, 2, &ncap))
                        return -ENOMEM;
        }
        if (__builtin_mul_overflow(ncap, elem, &bytes))
                return -ENOMEM;
        void *p = realloc(*arr, bytes);
        if (!p)
                return -ENOMEM;
        *arr = p;
        *cap = ncap;
        return 0;
}

int cairn_manifest_writer_new(const struct cairn_chunker_params *params,
                              struct cairn_manifest_writer **ret_writer)
{
        struct cairn_manifest_writer *w;

        if (cairn_chunker_params_validate(params) < 0)
                return -EINVAL;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->params = *params;
        w->blob_seed = hash_seed();
        *ret_writer = w;
        return 0;
}

void cairn_manifest_writer_free(struct cairn_manifest_writer *w)
{
        if (!w)
                return;
        free(w->inodes);
        free(w->dirents);
        free(w->chunks);
        free(w->blobs);
        free(w->strtab);
        free(w->profile);
        free(w->blob_slots);
        free(w);
}

int cairn_manifest_writer_add_string(struct cairn_manifest_writer *w, const char *s, size_t len,
                                     uint64_t *ret_offset)
{
        int r = grow((void **)&w->strtab, &w->cap_strtab, w->n_strtab, len, 1);
        if (r < 0)
                return r;
        if (len > 0)
                memcpy(w->strtab + w->n_strtab, s, len);
        if (ret_offset)
                *ret_offset = w->n_strtab;
        w->n_strtab += len;
        return 0;
}

int cairn_manifest_writer_add_inode(struct cairn_manifest_writer *w,
                                    const struct cairn_manifest_inode *inode, uint32_t *ret_ino)
{
        if (w->n_inodes >= CAIRN_MANIFEST_MAX_INODES)
                return -EOVERFLOW;
        int r = grow((void **)&w->inodes, &w->cap_inodes, w->n_inodes, 1, sizeof(*inode));
        if (r < 0)
                return r;
        w->inodes[w->n_inodes] = *inode;
        if (ret_ino)
                *ret_ino = (uint32_t)w->n_inodes;
        w->n_inodes++;
        return 0;
}

/* The pointer is valid until the next add_inode (the array may move). */
struct cairn_manifest_inode *cairn_manifest_writer_inode(struct cairn_manifest_writer *w,
                                                         uint32_t ino)
{
        if (ino >= w->n_inodes)
                return NULL;
        return &w->inodes[ino];
}

int cairn_manifest_writer_add_dirent(struct cairn_manifest_writer *w,
                                     const struct cairn_manifest_dirent *d, uint64_t *ret_index)
{
        int r = grow((void **)&w->dirents, &w->cap_dirents, w->n_dirents, 1, sizeof(*d));
        if (r < 0)
                return r;
        w->dirents[w->n_dirents] = *d;
        if (ret_index)
                *ret_index = w->n_dirents;
        w->n_dirents++;
        return 0;
}

int cairn_manifest_writer_add_chunk(struct cairn_manifest_writer *w,
                                    const struct cairn_manifest_chunk *c, uint64_t *ret_index)
{
        int r = grow((void **)&w->chunks, &w->cap_chunks, w->n_chunks, 1, sizeof(*c));
        if (r < 0)
                return r;
        w->chunks[w->n_chunks] = *c;
        if (ret_index)
                *ret_index = w->n_chunks;
        w->n_chunks++;
        return 0;
}

static void blob_slot_insert(uint32_t *slots, size_t cap, uint64_t seed,
                             const struct cairn_digest *d, uint32_t index)
{
        size_t mask = cap - 1;
        for (size_t i = digest_hash(d, seed) & mask;; i = (i + 1) & mask) {
                if (slots[i] == 0) {
                        slots[i] = index + 1;
                        return;
                }
        }
}

int cairn_manifest_writer_add_blob(struct cairn_manifest_writer *w, const struct cairn_digest *d,
                                   uint64_t size, uint32_t *ret_index)
{
        int r;

        if (w->blob_slot_cap) {
                size_t mask = w->blob_slot_cap - 1;
                for (size_t i = digest_hash(d, w->blob_seed) & mask; w->blob_slots[i];
                     i = (i + 1) & mask) {
                        uint32_t idx = w->blob_slots[i] - 1;
                        if (cairn_digest_equal(&w->blobs[idx].digest, d)) {
                                if (w->blobs[idx].size != size)
                                        return -EINVAL;
                                if (ret_index)
                                        *ret_index = idx;
                                return 0;
                        }
                }
        }
        if (w->n_blobs >= UINT32_MAX - 1)
                return -EOVERFLOW;

        /* Keep the load factor at or below 1/2. */
        if ((w->n_blobs + 1) * 2 > w->blob_slot_cap) {
                size_t ncap;
                r = table_capacity(w->n_blobs + 1, &ncap);
                if (r < 0)
                        return r;
                uint32_t *slots = calloc(ncap, sizeof(*slots));
                if (!slots)
                        return -ENOMEM;
                for (size_t k = 0; k < w->n_blobs; k++)
                        blob_slot_insert(slots, ncap, w->blob_seed, &w->blobs[k].digest,
                                         (uint32_t)k);
                free(w->blob_slots);
                w->blob_slots = slots;
                w->blob_slot_cap = ncap;
        }
        r = grow((void **)&w->blobs, &w->cap_blobs, w->n_blobs, 1, sizeof(*w->blobs));
        if (r < 0)
                return r;
        w->blobs[w->n_blobs] = (struct cairn_manifest_blob){.digest = *d, .size = size};
        blob_slot_insert(w->blob_slots, w->blob_slot_cap, w->blob_seed, d, (uint32_t)w->n_blobs);
        if (ret_index)
                *ret_index = (uint32_t)w->n_blobs;
        w->n_blobs++;
        return 0;
}

int cairn_manifest_writer_set_profile(struct cairn_manifest_writer *w, const uint64_t *chunks,
                                      size_t n)
{
        uint64_t *copy = NULL;
        if (n) {
                copy = malloc(n * sizeof(*copy));
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, chunks, n * sizeof(*copy));
        }
        free(w->profile);
        w->profile = copy;
        w->n_profile = n;
        return 0;
}

uint64_t cairn_manifest_writer_dirent_count(const struct cairn_manifest_writer *w)
{
        return w->n_dirents;
}

uint64_t cairn_manifest_writer_chunk_count(const struct cairn_manifest_writer *w)
{
        return w->n_chunks;
}

int cairn_manifest_writer_finish(struct cairn_manifest_writer *w, void **ret_buf, size_t *ret_size,
                                 char *errbuf, size_t errlen)
{
        struct cairn_manifest_header h = {0};
        struct cairn_manifest view;
        uint64_t off, len, logical = 0;
        uint8_t *buf = NULL;
        int r;

        memcpy(h.magic, CAIRN_MANIFEST_MAGIC, sizeof(h.magic));
        h.version = CAIRN_MANIFEST_VERSION;
        h.inode_count = (uint32_t)w->n_inodes;
        h.blob_count = (uint32_t)w->n_blobs;
        h.dirent_count = w->n_dirents;
        h.chunk_count = w->n_chunks;
        h.strtab_size = w->n_strtab;
        h.chunk_min = w->params.min_size;
        h.chunk_avg = w->params.avg_size;
        h.chunk_max = w->params.max_size;
        for (size_t i = 0; i < w->n_inodes; i++)
                if (S_ISREG(w->inodes[i].mode) &&
                    __builtin_add_overflow(logical, w->inodes[i].size, &logical))
                        return fail(errbuf, errlen, "total file size overflows");
        h.logical_size = logical;

        /* Each table follows the previous one; sizes are multiples of 8, so all stay aligned. */
        off = CAIRN_MANIFEST_HEADER_SIZE;
        h.inodes_offset = off;
        if (__builtin_mul_overflow((uint64_t)w->n_inodes, CAIRN_MANIFEST_INODE_SIZE, &len) ||
            __builtin_add_overflow(off, len, &off))
                goto too_big;
        h.dirents_offset = off;
        if (__builtin_mul_overflow((uint64_t)w->n_dirents, CAIRN_MANIFEST_DIRENT_SIZE, &len) ||
            __builtin_add_overflow(off, len, &off))
                goto too_big;
        h.chunks_offset = off;
        if (__builtin_mul_overflow((uint64_t)w->n_chunks, CAIRN_MANIFEST_CHUNK_SIZE, &len) ||
            __builtin_add_overflow(off, len, &off))
                goto too_big;
        h.blobs_offset = off;
        if (__builtin_mul_overflow((uint64_t)w->n_blobs, CAIRN_MANIFEST_BLOB_SIZE, &len) ||
            __builtin_add_overflow(off, len, &off))
                goto too_big;
        h.strtab_offset = off;
        if (__builtin_add_overflow(off, (uint64_t)w->n_strtab, &off))
                goto too_big;
        uint64_t profile_offset = 0;
        if (w->n_profile) {
                profile_offset = (off + 7) & ~(uint64_t)7;
                h.profile_count = w->n_profile;
                if (__builtin_mul_overflow((uint64_t)w->n_profile, 8, &len) ||
                    __builtin_add_overflow(profile_offset, len, &off))
                        goto too_big;
        }
        if (off > CAIRN_MANIFEST_MAX_SIZE || off > SIZE_MAX)
                goto too_big;
        h.total_size = off;

        /* malloc's alignment (>= 8) is what validate and in-place readers need. */
        buf = calloc(1, (size_t)off); /* zeroed: the padding before the profile */
        if (!buf)
                return -ENOMEM;
        memcpy(buf, &h, sizeof(h));
        if (w->n_inodes)
                memcpy(buf + h.inodes_offset, w->inodes, w->n_inodes * sizeof(*w->inodes));
        if (w->n_dirents)
                memcpy(buf + h.dirents_offset, w->dirents, w->n_dirents * sizeof(*w->dirents));
        if (w->n_chunks)
                memcpy(buf + h.chunks_offset, w->chunks, w->n_chunks * sizeof(*w->chunks));
        if (w->n_blobs)
                memcpy(buf + h.blobs_offset, w->blobs, w->n_blobs * sizeof(*w->blobs));
        if (w->n_strtab)
                memcpy(buf + h.strtab_offset, w->strtab, w->n_strtab);
        if (w->n_profile)
                memcpy(buf + profile_offset, w->profile, w->n_profile * sizeof(*w->profile));

        r = cairn_manifest_validate(buf, (size_t)off, &view, errbuf, errlen);
        if (r < 0) {
                free(buf);
                return r == -ENOMEM ? r : -EINVAL;
        }
        *ret_buf = buf;
        *ret_size = (size_t)off;
        return 0;

too_big:
        if (errbuf && errlen > 0)
                snprintf(errbuf, errlen, "manifest would exceed the limit of %llu bytes",
                         (unsigned long long)CAIRN_MANIFEST_MAX_SIZE);
        return -EFBIG;
}

/* ------------------------------------------------------------------------------------------ */
/* Statistics                                                                                 */

/* A set of chunk indices of one manifest, keyed by chunk id.  Slot = index + 1, 0 = empty. */
struct chunk_set {
        const struct cairn_manifest *m;
        uint64_t *slots;
        size_t mask;
        uint64_t seed;
};

static int chunk_set_init(struct chunk_set *s, const struct cairn_manifest *m, uint64_t seed)
{
        size_t cap;
        int r = table_capacity(m->hdr->chunk_count, &cap);
        if (r < 0)
                return r;
        s->slots = calloc(cap, sizeof(*s->slots));
        if (!s->slots)
                return -ENOMEM;
        s->m = m;
        s->mask = cap - 1;
        s->seed = seed;
        return 0;
}

/* Inserts chunk index ci unless an equal id is present; returns true when it was new. */
static bool chunk_set_add(struct chunk_set *s, uint64_t ci)
{
        const struct cairn_digest *id = &s->m->chunks[ci].id;
        for (size_t i = digest_hash(id, s->seed) & s->mask;; i = (i + 1) & s->mask) {
                if (s->slots[i] == 0) {
                        s->slots[i] = ci + 1;
                        return true;
                }
                if (cairn_digest_equal(&s->m->chunks[s->slots[i] - 1].id, id))
                        return false;
        }
}

static bool chunk_set_contains(const struct chunk_set *s, const struct cairn_digest *id)
{
        for (size_t i = digest_hash(id, s->seed) & s->mask; s->slots[i]; i = (i + 1) & s->mask)
                if (cairn_digest_equal(&s->m->chunks[s->slots[i] - 1].id, id))
                        return true;
        return false;
}

int cairn_manifest_stats(const struct cairn_manifest *m, const struct cairn_manifest *base,
                         struct cairn_manifest_stats *ret_stats)
{
        struct cairn_manifest_stats st = {0};
        struct chunk_set set = {0}, base_set = {0};
        uint8_t *blob_used = NULL;
        uint64_t seed = hash_seed();
        int r;

        for (uint32_t i = 0; i < m->hdr->inode_count; i++) {
                uint32_t type = m->inodes[i].mode & S_IFMT;
                if (type == S_IFDIR)
                        st.dirs++;
                else if (type == S_IFREG)
                        st.files++;
                else if (type == S_IFLNK)
                        st.symlinks++;
        }
        st.logical_bytes = m->hdr->logical_size;
        st.chunk_refs = m->hdr->chunk_count;

        r = chunk_set_init(&set, m, seed);
        if (r < 0)
                goto out;
        if (base) {
                r = chunk_set_init(&base_set, base, seed);
                if (r < 0)
                        goto out;
                for (uint64_t i = 0; i < base->hdr->chunk_count; i++)
                        chunk_set_add(&base_set, i);
        }
        blob_used = calloc((size_t)m->hdr->blob_count / 8 + 1, 1);
        if (!blob_used) {
                r = -ENOMEM;
                goto out;
        }

        for (uint64_t i = 0; i < m->hdr->chunk_count; i++) {
                const struct cairn_manifest_chunk *c = &m->chunks[i];
                if (!(blob_used[c->blob >> 3] & (1u << (c->blob & 7)))) {
                        blob_used[c->blob >> 3] |= (uint8_t)(1u << (c->blob & 7));
                        st.blobs++;
                        st.blob_bytes += m->blobs[c->blob].size;
                }
                if (!chunk_set_add(&set, i))
                        continue;
                st.unique_chunks++;
                st.unique_bytes += c->size;
                st.stored_bytes += c->stored_size;
                if (base && chunk_set_contains(&base_set, &c->id)) {
                        st.base_shared_chunks++;
                        st.base_shared_bytes += c->stored_size;
                }
        }
        *ret_stats = st;
        r = 0;
out:
        free(blob_used);
        free(set.slots);
        free(base_set.slots);
        return r;
}
