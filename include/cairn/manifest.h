/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest ("index"): one binary blob that describes a whole volume and
 * is used in place, mmapped.  Path lookup, readdir and offset->chunk all
 * run on the mapped bytes; opening a manifest allocates no per-file state.
 *
 * Byte layout (docs/FORMAT.md is normative):
 *
 *   header (128 bytes) | inodes[] (64 B) | dirents[] (16 B) | chunks[] (64 B)
 *   | blobs[] (40 B) | string table | [zero padding to 8 | profile (u64 each)]
 *
 * All integers little-endian, every table 8-byte aligned, and the manifest
 * is rejected by cairn_manifest_validate() unless every offset, length and
 * reference is in bounds and the tree is well formed.  Code that only uses
 * a manifest that passed validation never needs to bounds-check again.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/chunker.h"
#include "cairn/digest.h"

#define CAIRN_MANIFEST_MAGIC "CAIRNIDX"
#define CAIRN_MANIFEST_VERSION 1u
#define CAIRN_MANIFEST_HEADER_SIZE 128u
#define CAIRN_MANIFEST_INODE_SIZE 64u
#define CAIRN_MANIFEST_DIRENT_SIZE 16u
#define CAIRN_MANIFEST_CHUNK_SIZE 64u
#define CAIRN_MANIFEST_BLOB_SIZE 40u

/* Limits a valid manifest obeys. */
#define CAIRN_NAME_MAX 255u
#define CAIRN_SYMLINK_MAX 4095u
#define CAIRN_MANIFEST_MAX_INODES 0xfffffff0u
/* Largest manifest any reader will accept (bytes). */
#define CAIRN_MANIFEST_MAX_SIZE (4ull << 30)

/* Chunk flags. */
#define CAIRN_CHUNK_ZSTD 0x1u

/* On-store records.  Host byte order must be little-endian (checked at build). */
struct cairn_manifest_header {
        char magic[8];          /* "CAIRNIDX" */
        uint32_t version;       /* CAIRN_MANIFEST_VERSION */
        uint32_t flags;         /* 0; readers reject unknown bits */
        uint64_t total_size;    /* length of the whole manifest */
        uint32_t inode_count;   /* >= 1; inode 0 is the root directory */
        uint32_t blob_count;
        uint64_t dirent_count;  /* == inode_count - 1 */
        uint64_t chunk_count;
        uint64_t strtab_size;
        uint64_t inodes_offset; /* == 128 */
        uint64_t dirents_offset;
        uint64_t chunks_offset;
        uint64_t blobs_offset;
        uint64_t strtab_offset;
        uint32_t chunk_min;     /* chunking parameters used by the build */
        uint32_t chunk_avg;
        uint32_t chunk_max;
        uint32_t reserved0;     /* 0 */
        uint64_t logical_size;  /* sum of all regular file sizes */
        uint64_t profile_count; /* entries of the optional access profile (0: none) */
};

struct cairn_manifest_inode {
        uint32_t mode;          /* st_mode: S_IFDIR, S_IFREG or S_IFLNK | 07777 bits */
        uint32_t uid;
        uint32_t gid;
        uint32_t nlink;         /* dirs: 2 + subdirectories; others: 1 */
        int64_t mtime_sec;
        uint32_t mtime_nsec;    /* < 1e9 */
        uint32_t parent;        /* index of the parent directory; root: 0 */
        uint64_t size;          /* file bytes; symlink target length; dir: entries */
        uint64_t first;         /* dir: first dirent; file: first chunk; link: strtab offset */
        uint64_t count;         /* dir: dirents; file: chunks; link: target length */
        uint64_t reserved;      /* 0 */
};

struct cairn_manifest_dirent {
        uint64_t name_offset;   /* into the string table */
        uint32_t name_len;      /* 1..CAIRN_NAME_MAX */
        uint32_t inode;         /* child inode index, > parent */
};

struct cairn_manifest_chunk {
        struct cairn_digest id; /* SHA-256 of the uncompressed bytes */
        uint64_t file_offset;   /* where this chunk starts in its file */
        uint64_t blob_offset;   /* where its stored bytes start in the blob */
        uint32_t blob;          /* index into the blob table */
        uint32_t stored_size;   /* bytes in the blob */
        uint32_t size;          /* uncompressed bytes */
        uint32_t flags;         /* CAIRN_CHUNK_ZSTD or 0 (raw) */
};

struct cairn_manifest_blob {
        struct cairn_digest digest;
        uint64_t size;
};

/*
 * A validated, read-only view over manifest bytes.  The bytes are borrowed:
 * they must stay mapped for the life of the view.  Embedded object
 * (_init/_release not needed: the view owns nothing).
 */
struct cairn_manifest {
        const uint8_t *base;
        size_t size;
        const struct cairn_manifest_header *hdr;
        const struct cairn_manifest_inode *inodes;
        const struct cairn_manifest_dirent *dirents;
        const struct cairn_manifest_chunk *chunks;
        const struct cairn_manifest_blob *blobs;
        const char *strtab;
        /* Chunk indexes in the order a recorded workload first read them (may be empty). */
        const uint64_t *profile;
        uint64_t profile_count;
};

/*
 * Validates size bytes at base completely and, on success, fills ret_view.
 * On failure returns -EINVAL (or -EFBIG for a manifest over the size cap),
 * leaves ret_view untouched and, if errbuf is not NULL, writes a one-line
 * reason (at most errlen bytes, NUL-terminated).  Never reads outside
 * [base, base + size).  Uses O(inode_count / 8) bytes of temporary heap.
 */
int cairn_manifest_validate(const void *base, size_t size, struct cairn_manifest *ret_view,
                            char *errbuf, size_t errlen);

static inline const struct cairn_manifest_inode *cairn_manifest_inode(const struct cairn_manifest *m,
                                                                      uint32_t ino)
{
        return &m->inodes[ino];
}

static inline uint32_t cairn_manifest_inode_count(const struct cairn_manifest *m)
{
        return m->hdr->inode_count;
}

/* Looks up name in directory dir by binary search; -ENOENT or -ENOTDIR. */
int cairn_manifest_lookup(const struct cairn_manifest *m, uint32_t dir, const char *name,
                          size_t name_len, uint32_t *ret_ino);

/* Resolves a relative path ("a/b/c", "" = root) from the root; -ENOENT, -ENOTDIR. */
int cairn_manifest_resolve(const struct cairn_manifest *m, const char *path, uint32_t *ret_ino);

/* The i-th entry of directory dir (0 <= i < inode.count); NULL when out of range. */
const struct cairn_manifest_dirent *cairn_manifest_dirent_at(const struct cairn_manifest *m,
                                                            uint32_t dir, uint64_t i);

static inline const char *cairn_manifest_string(const struct cairn_manifest *m, uint64_t off)
{
        return m->strtab + off;
}

/*
 * Index of the first chunk (absolute, into m->chunks) of regular file ino
 * that contains byte offset off, by binary search; -ENXIO when off is at or
 * past the end of the file (or the file is empty).
 */
int cairn_manifest_find_chunk(const struct cairn_manifest *m, uint32_t ino, uint64_t off,
                              uint64_t *ret_chunk);

/*
 * Writing.  The builder appends inodes, dirents, chunks, blobs and strings
 * in the order the format requires and serializes once at the end.
 */
struct cairn_manifest_writer;

int cairn_manifest_writer_new(const struct cairn_chunker_params *params,
                              struct cairn_manifest_writer **ret_writer);
void cairn_manifest_writer_free(struct cairn_manifest_writer *w);

/* Appends to the string table; returns the offset in *ret_offset. */
int cairn_manifest_writer_add_string(struct cairn_manifest_writer *w, const char *s, size_t len,
                                     uint64_t *ret_offset);
/* Appends an inode; returns its index. The record is copied. */
int cairn_manifest_writer_add_inode(struct cairn_manifest_writer *w,
                                    const struct cairn_manifest_inode *inode, uint32_t *ret_ino);
/*
 * Sets the access profile stored with the volume: chunk indexes (into the
 * chunk table as finally written) in first-read order.  Copied.
 */
int cairn_manifest_writer_set_profile(struct cairn_manifest_writer *w, const uint64_t *chunks,
                                      size_t n);
/* Gives access to an inode already added (to fill first/count later). */
struct cairn_manifest_inode *cairn_manifest_writer_inode(struct cairn_manifest_writer *w,
                                                         uint32_t ino);
int cairn_manifest_writer_add_dirent(struct cairn_manifest_writer *w,
                                     const struct cairn_manifest_dirent *d, uint64_t *ret_index);
int cairn_manifest_writer_add_chunk(struct cairn_manifest_writer *w,
                                    const struct cairn_manifest_chunk *c, uint64_t *ret_index);
/* Adds a blob or returns the index of the identical one already present. */
int cairn_manifest_writer_add_blob(struct cairn_manifest_writer *w, const struct cairn_digest *d,
                                   uint64_t size, uint32_t *ret_index);
uint64_t cairn_manifest_writer_dirent_count(const struct cairn_manifest_writer *w);
uint64_t cairn_manifest_writer_chunk_count(const struct cairn_manifest_writer *w);

/*
 * Serializes into a new heap buffer (caller frees with free()) and checks
 * the result with cairn_manifest_validate(); -EINVAL means the builder
 * produced something invalid (a bug), with the reason in errbuf.
 */
int cairn_manifest_writer_finish(struct cairn_manifest_writer *w, void **ret_buf, size_t *ret_size,
                                 char *errbuf, size_t errlen);

/* Summary figures of a volume, for `cairn inspect`. */
struct cairn_manifest_stats {
        uint64_t dirs, files, symlinks;
        uint64_t logical_bytes;      /* sum of file sizes */
        uint64_t chunk_refs;         /* chunk table entries */
        uint64_t unique_chunks;      /* distinct chunk ids */
        uint64_t unique_bytes;       /* uncompressed bytes of distinct chunks */
        uint64_t stored_bytes;       /* stored (compressed) bytes of distinct chunks */
        uint64_t blobs;              /* pack blobs referenced */
        uint64_t blob_bytes;         /* their total size */
        uint64_t base_shared_chunks; /* distinct chunks also in the base (0 without one) */
        uint64_t base_shared_bytes;  /* their stored bytes */
};

/* base may be NULL.  Uses temporary heap proportional to the chunk count. */
int cairn_manifest_stats(const struct cairn_manifest *m, const struct cairn_manifest *base,
                         struct cairn_manifest_stats *ret_stats);
