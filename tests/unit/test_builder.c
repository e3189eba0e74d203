/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Building volumes.  Each test makes its own source tree and file store in
 * a mkdtemp directory and checks the manifest the build wrote against the
 * source: counts, skipped special files (reported through on_skip), chunk
 * tables that follow the chunker exactly, ids that are the SHA-256 of the
 * source bytes, and packs in which each file's chunks are contiguous.
 * Then the properties a user relies on: identical results whatever the
 * thread count, an unchanged rebuild that writes nothing, an insertion at
 * the front of a file that costs only a chunk or two, dedup against
 * --base, and failures that say why, write no ref and leave no packs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/builder.h"
#include "cairn/chunker.h"
#include "cairn/manifest.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static const struct cairn_chunker_params small = {4 * KiB, 16 * KiB, 64 * KiB};
static const struct cairn_chunker_params medium = {16 * KiB, 64 * KiB, 256 * KiB};

struct fixture {
        char dir[1024];
        char src[1100];
        char store_dir[1100];
        struct cairn_store *store;
        /* on_skip reports */
        char skipped[8][256];
        char why[8][64];
        unsigned nskipped;
};

/* ---- helpers ---- */

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static uint8_t *random_bytes(size_t len, uint64_t seed)
{
        uint8_t *p = malloc(len ? len : 1);
        assert_non_null(p);
        uint64_t st = seed;
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)splitmix64(&st);
        return p;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

static void rm_rf(const char *path)
{
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        if (!f)
                return -1;
        const char *tmp = getenv("TMPDIR");
        snprintf(f->dir, sizeof(f->dir), "%s/cairn-test-builder-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(f->dir)) {
                free(f);
                return -1;
        }
        snprintf(f->src, sizeof(f->src), "%s/src", f->dir);
        snprintf(f->store_dir, sizeof(f->store_dir), "%s/store", f->dir);
        if (mkdir(f->src, 0755) < 0 || cairn_store_open(f->store_dir, true, &f->store) < 0) {
                rm_rf(f->dir);
                free(f);
                return -1;
        }
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        cairn_store_free(f->store);
        rm_rf(f->dir);
        free(f);
        return 0;
}

/* Path of rel under the source tree. */
static void src_path(const struct fixture *f, const char *rel, char *buf, size_t len)
{
        int n = snprintf(buf, len, "%s/%s", f->src, rel);
        assert_true(n > 0 && (size_t)n < len);
}

static void put_file(const struct fixture *f, const char *rel, const void *data, size_t len,
                     mode_t mode)
{
        char p[4096];
        src_path(f, rel, p, sizeof(p));
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        const uint8_t *b = data;
        size_t left = len;
        while (left) {
                ssize_t n = write(fd, b, left);
                assert_true(n > 0);
                b += n;
                left -= (size_t)n;
        }
        assert_int_equal(fchmod(fd, mode), 0);
        close(fd);
}

static void put_random_file(const struct fixture *f, const char *rel, size_t len, uint64_t seed)
{
        uint8_t *d = random_bytes(len, seed);
        put_file(f, rel, d, len, 0644);
        free(d);
}

static void put_dir(const struct fixture *f, const char *rel)
{
        char p[4096];
        src_path(f, rel, p, sizeof(p));
        assert_int_equal(mkdir(p, 0755), 0);
}

static uint8_t *read_src(const struct fixture *f, const char *rel, size_t *ret_len)
{
        char p[4096];
        struct stat st;
        src_path(f, rel, p, sizeof(p));
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), (ssize_t)st.st_size);
        close(fd);
        *ret_len = (size_t)st.st_size;
        return buf;
}

static void record_skip(const char *path, const char *why, void *userdata)
{
        struct fixture *f = userdata;
        if (f->nskipped < 8) {
                snprintf(f->skipped[f->nskipped], sizeof(f->skipped[0]), "%s", path);
                snprintf(f->why[f->nskipped], sizeof(f->why[0]), "%s", why);
        }
        f->nskipped++;
}

static void options(struct fixture *f, struct cairn_build_options *o, const char *name,
                    const char *tag)
{
        cairn_build_options_init(o);
        o->src_dir = f->src;
        o->store = f->store;
        o->name = name;
        o->tag = tag;
        o->chunking = small;
        o->threads = 2;
        o->on_skip = record_skip;
        o->userdata = f;
}

static void build_ok(const struct cairn_build_options *o, struct cairn_build_result *res)
{
        char err[512] = "";
        int r = cairn_build(o, res, err, sizeof(err));
        if (r < 0)
                fail_msg("build failed: %d: %s", r, err);
}

static struct cairn_volume *open_digest(struct fixture *f, const struct cairn_digest *d)
{
        struct cairn_ref ref;
        struct cairn_volume *vol = NULL;
        char s[300], ds[CAIRN_DIGEST_STR_SIZE], err[512] = "";
        cairn_digest_to_string(d, ds);
        snprintf(s, sizeof(s), "any@%s", ds);
        assert_int_equal(cairn_ref_parse(s, &ref), 0);
        int r = cairn_volume_open(f->store, &ref, NULL, &vol, err, sizeof(err));
        if (r < 0)
                fail_msg("cannot open %s: %s", s, err);
        return vol;
}

/* Names of the entries of a store directory, sorted, as one newline-separated string. */
static char *list_dir(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return strdup("");
        char *names[4096];
        size_t n = 0, total = 1;
        for (struct dirent *de; (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                assert_true(n < 4096);
                names[n] = strdup(de->d_name);
                total += strlen(de->d_name) + 1;
                n++;
        }
        closedir(d);
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
                        char *t = names[j];
                        names[j] = names[j - 1];
                        names[j - 1] = t;
                }
        char *out = malloc(total);
        assert_non_null(out);
        out[0] = '\0';
        for (size_t i = 0; i < n; i++) {
                strcat(out, names[i]);
                strcat(out, "\n");
                free(names[i]);
        }
        return out;
}

static char *list_blobs(const struct fixture *f)
{
        char p[1200];
        snprintf(p, sizeof(p), "%s/blobs/sha256", f->store_dir);
        return list_dir(p);
}

static int count_lines(const char *s)
{
        int n = 0;
        for (; *s; s++)
                n += *s == '\n';
        return n;
}

static bool ref_exists(const struct fixture *f, const char *name, const char *tag)
{
        char p[2048];
        struct stat st;
        snprintf(p, sizeof(p), "%s/refs/%s/%s", f->store_dir, name, tag);
        return lstat(p, &st) == 0;
}

/* Every byte of every regular file in the volume equals the source. */
static void check_volume_content(struct fixture *f, struct cairn_volume *vol, const char *rel,
                                 uint32_t ino)
{
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
        if (S_ISDIR(in->mode)) {
                for (uint64_t i = 0; i < in->count; i++) {
                        const struct cairn_manifest_dirent *de;
                        de = cairn_manifest_dirent_at(m, ino, i);
                        char child[2048];
                        snprintf(child, sizeof(child), "%s%s%.*s", rel, *rel ? "/" : "",
                                 (int)de->name_len, cairn_manifest_string(m, de->name_offset));
                        check_volume_content(f, vol, child, de->inode);
                }
                return;
        }
        if (!S_ISREG(in->mode))
                return;
        size_t len;
        uint8_t *want = read_src(f, rel, &len);
        assert_int_equal(in->size, len);
        uint8_t *got = malloc(len + 1);
        assert_non_null(got);
        assert_int_equal(cairn_volume_read(vol, ino, 0, len + 1, got), (ssize_t)len);
        if (memcmp(got, want, len) != 0)
                fail_msg("content of '%s' differs", rel);
        free(got);
        free(want);
}

/* ---- tests ---- */

static void test_options_init(void **state)
{
        (void)state;
        struct cairn_build_options o;
        memset(&o, 0xa5, sizeof(o));
        cairn_build_options_init(&o);
        assert_null(o.src_dir);
        assert_null(o.store);
        assert_null(o.base_ref);
        assert_null(o.on_skip);
        assert_int_equal(o.chunking.min_size, CAIRN_CHUNK_MIN_DEFAULT);
        assert_int_equal(o.chunking.avg_size, CAIRN_CHUNK_AVG_DEFAULT);
        assert_int_equal(o.chunking.max_size, CAIRN_CHUNK_MAX_DEFAULT);
        assert_int_equal(o.compression_level, CAIRN_COMPRESSION_LEVEL_DEFAULT);
        assert_int_equal(o.pack_max, CAIRN_PACK_MAX_DEFAULT);
        assert_int_equal(o.threads, 0);
        assert_false(o.progress);
}

static void test_counts_and_skips(void **state)
{
        struct fixture *f = *state;
        char p[4096];
        put_dir(f, "a");
        put_dir(f, "a/b");
        put_dir(f, "empty");
        put_file(f, "zero", "", 0, 0644);
        put_file(f, "a/one", "x", 1, 0644);
        put_random_file(f, "a/b/big", 300 * KiB + 5, 1);
        src_path(f, "link", p, sizeof(p));
        assert_int_equal(symlink("a/one", p), 0);
        src_path(f, "a/fifo", p, sizeof(p));
        assert_int_equal(mkfifo(p, 0600), 0);
        /* A Unix socket, bound in the tree. */
        int sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(sfd >= 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        src_path(f, "sock", p, sizeof(p));
        assert_true(strlen(p) < sizeof(sa.sun_path));
        memcpy(sa.sun_path, p, strlen(p) + 1);
        assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        /* A device node, where the container lets us make one. */
        src_path(f, "a/b/null", p, sizeof(p));
        bool have_dev = mknod(p, S_IFCHR | 0600, makedev(1, 3)) == 0;

        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "org/model", "v1");
        build_ok(&o, &res);
        close(sfd);

        unsigned want_skips = 2 + have_dev;
        assert_int_equal(res.skipped, want_skips);
        assert_int_equal(f->nskipped, want_skips);
        /* Reported in walk order (breadth first, sorted), with the path relative to src. */
        bool saw_fifo = false, saw_sock = false, saw_dev = false;
        for (unsigned i = 0; i < f->nskipped; i++) {
                if (!strcmp(f->skipped[i], "a/fifo")) {
                        saw_fifo = true;
                        assert_non_null(strstr(f->why[i], "FIFO"));
                } else if (!strcmp(f->skipped[i], "sock")) {
                        saw_sock = true;
                        assert_non_null(strstr(f->why[i], "socket"));
                } else if (!strcmp(f->skipped[i], "a/b/null")) {
                        saw_dev = true;
                        assert_non_null(strstr(f->why[i], "device"));
                } else {
                        fail_msg("unexpected skip '%s' (%s)", f->skipped[i], f->why[i]);
                }
        }
        assert_true(saw_fifo && saw_sock && saw_dev == have_dev);

        assert_int_equal(res.dirs, 4); /* root, a, a/b, empty */
        assert_int_equal(res.files, 3);
        assert_int_equal(res.symlinks, 1);
        assert_int_equal(res.logical_bytes, 300 * KiB + 5 + 1);
        assert_true(res.chunks >= 300 * KiB / small.max_size + 1);
        assert_int_equal(res.new_chunks + res.reused_chunks, res.chunks);
        assert_int_equal(res.packs_written, 1);
        assert_true(res.new_pack_bytes > 0);

        /* The ref names the manifest, which is in the store with the reported size. */
        struct cairn_digest d;
        uint64_t size;
        assert_int_equal(cairn_store_read_ref(f->store, "org/model", "v1", &d), 0);
        assert_true(cairn_digest_equal(&d, &res.manifest));
        assert_int_equal(cairn_store_blob_size(f->store, &d, &size), 0);
        assert_int_equal(size, res.manifest_size);

        struct cairn_volume *vol = open_digest(f, &d);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        assert_int_equal(m->hdr->chunk_count, res.chunks);
        assert_int_equal(m->hdr->logical_size, res.logical_bytes);
        assert_int_equal(m->hdr->chunk_min, small.min_size);
        assert_int_equal(m->hdr->chunk_avg, small.avg_size);
        assert_int_equal(m->hdr->chunk_max, small.max_size);
        /* root; a, empty, link, zero; a/b, a/one; a/b/big -- and none of the specials. */
        assert_int_equal(cairn_manifest_inode_count(m), 1 + 3 + 3 + 1);
        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(m, "a/fifo", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "sock", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "a/b/null", &ino), -ENOENT);
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);
}

/* Without on_skip the build still skips (and logs at debug level only). */
static void test_skip_without_callback(void **state)
{
        struct fixture *f = *state;
        char p[4096];
        put_file(f, "a", "a", 1, 0644);
        src_path(f, "fifo", p, sizeof(p));
        assert_int_equal(mkfifo(p, 0600), 0);
        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "t");
        o.on_skip = NULL;
        o.userdata = NULL;
        build_ok(&o, &res);
        assert_int_equal(res.skipped, 1);
        assert_int_equal(res.files, 1);
}

/* The chunk table is exactly the chunker's cut of each file, with SHA-256 ids. */
static void check_chunks_follow_chunker(struct fixture *f, const struct cairn_manifest *m,
                                        const char *rel, const struct cairn_chunker_params *p)
{
        uint32_t ino;
        size_t len;
        assert_int_equal(cairn_manifest_resolve(m, rel, &ino), 0);
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
        uint8_t *data = read_src(f, rel, &len);
        assert_int_equal(in->size, len);
        size_t off = 0;
        uint64_t k = in->first;
        while (off < len) {
                size_t n = cairn_chunker_next(p, data + off, len - off, 1);
                assert_true(k < in->first + in->count);
                const struct cairn_manifest_chunk *c = &m->chunks[k];
                struct cairn_digest id;
                cairn_sha256(data + off, n, &id);
                if (c->size != n || c->file_offset != off)
                        fail_msg("'%s' chunk %llu: size %u at %llu, chunker says %zu at %zu", rel,
                                 (unsigned long long)(k - in->first), c->size,
                                 (unsigned long long)c->file_offset, n, off);
                assert_true(cairn_digest_equal(&c->id, &id));
                assert_true(c->blob < m->hdr->blob_count);
                assert_true(c->blob_offset + c->stored_size <= m->blobs[c->blob].size);
                if (c->flags & CAIRN_CHUNK_ZSTD)
                        assert_true(c->stored_size < c->size);
                else
                        assert_int_equal(c->stored_size, c->size);
                off += n;
                k++;
        }
        assert_int_equal(k, in->first + in->count);
        if (len == 0)
                assert_int_equal(in->count, 0);
        free(data);
}

static void test_chunks_follow_chunker(void **state)
{
        struct fixture *f = *state;
        static const size_t sizes[] = {0, 1, 4 * KiB - 1, 4 * KiB, 4 * KiB + 1, 16 * KiB - 1,
                                       16 * KiB, 16 * KiB + 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1,
                                       3 * 64 * KiB + 7, 1 * MiB + 333,
                                       /* around the builder's 16 MiB read buffer */
                                       16 * MiB, 16 * MiB + 4097};
        char name[64];
        put_dir(f, "s");
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                snprintf(name, sizeof(name), "s/f%02zu", i);
                put_random_file(f, name, sizes[i], 10 + i);
        }
        /* Compressible text: its chunks are stored as zstd frames. */
        size_t tlen = 500 * KiB;
        uint8_t *text = malloc(tlen);
        assert_non_null(text);
        uint64_t st = 5;
        for (size_t i = 0; i < tlen; i++)
                text[i] = (uint8_t) "abcdefgh \n"[splitmix64(&st) % 10];
        put_file(f, "text", text, tlen, 0644);
        free(text);
        /* Data of highly repetitive content: same chunk many times in one file. */
        uint8_t *zeros = calloc(1, 1 * MiB);
        assert_non_null(zeros);
        put_file(f, "zeros", zeros, 1 * MiB, 0644);
        free(zeros);

        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "t");
        build_ok(&o, &res);
        struct cairn_volume *vol = open_digest(f, &res.manifest);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                snprintf(name, sizeof(name), "s/f%02zu", i);
                check_chunks_follow_chunker(f, m, name, &small);
        }
        check_chunks_follow_chunker(f, m, "text", &small);
        check_chunks_follow_chunker(f, m, "zeros", &small);
        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(m, "text", &ino), 0);
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
        for (uint64_t k = in->first; k < in->first + in->count; k++)
                assert_true(m->chunks[k].flags & CAIRN_CHUNK_ZSTD);
        /* The zeros repeat one chunk: stored once, referenced many times. */
        assert_int_equal(cairn_manifest_resolve(m, "zeros", &ino), 0);
        in = cairn_manifest_inode(m, ino);
        assert_true(in->count >= 16);
        for (uint64_t k = in->first + 1; k < in->first + in->count - 1; k++) {
                assert_true(cairn_digest_equal(&m->chunks[k].id, &m->chunks[in->first].id));
                assert_int_equal(m->chunks[k].blob_offset, m->chunks[in->first].blob_offset);
        }
        assert_true(res.reused_chunks >= in->count - 2);

        /* Blob table sizes match the store. */
        for (uint32_t b = 0; b < m->hdr->blob_count; b++) {
                uint64_t size;
                assert_int_equal(cairn_store_blob_size(f->store, &m->blobs[b].digest, &size), 0);
                assert_int_equal(size, m->blobs[b].size);
        }
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);
}

/* Packs roll at file boundaries past pack_max; a file's new chunks stay contiguous. */
static void test_packs_contiguous(void **state)
{
        struct fixture *f = *state;
        char name[64];
        for (int i = 0; i < 12; i++) {
                snprintf(name, sizeof(name), "f%02d", i);
                put_random_file(f, name, 100 * KiB + (size_t)i * 37 * KiB, 100 + (uint64_t)i);
        }
        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "t");
        o.pack_max = 250 * KiB;
        build_ok(&o, &res);
        assert_true(res.packs_written >= 4);
        assert_int_equal(res.reused_chunks, 0);

        struct cairn_volume *vol = open_digest(f, &res.manifest);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        assert_int_equal(m->hdr->blob_count, res.packs_written);
        uint64_t pack_bytes = 0;
        for (uint32_t b = 0; b < m->hdr->blob_count; b++) {
                pack_bytes += m->blobs[b].size;
                /* Rolled only once past the limit: no pack much bigger than limit + one file. */
                assert_true(m->blobs[b].size < o.pack_max + 600 * KiB);
        }
        assert_int_equal(pack_bytes, res.new_pack_bytes);
        for (int i = 0; i < 12; i++) {
                uint32_t ino;
                snprintf(name, sizeof(name), "f%02d", i);
                assert_int_equal(cairn_manifest_resolve(m, name, &ino), 0);
                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
                const struct cairn_manifest_chunk *c = &m->chunks[in->first];
                for (uint64_t k = 1; k < in->count; k++) {
                        assert_int_equal(c[k].blob, c[0].blob);
                        assert_int_equal(c[k].blob_offset,
                                         c[k - 1].blob_offset + c[k - 1].stored_size);
                }
        }
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);
}

static void make_mixed_tree(struct fixture *f)
{
        char name[64];
        put_dir(f, "d");
        put_dir(f, "d/e");
        for (int i = 0; i < 20; i++) {
                snprintf(name, sizeof(name), "%s/f%02d", i % 2 ? "d" : "d/e", i);
                put_random_file(f, name, (size_t)i * 23 * KiB + (size_t)i, 200 + (uint64_t)i);
        }
        put_random_file(f, "large", 3 * MiB + 1, 7);
        char p[4096];
        src_path(f, "d/link", p, sizeof(p));
        assert_int_equal(symlink("../large", p), 0);
}

/* Same tree, different thread counts and stores: the same manifest, byte for byte. */
static void test_deterministic(void **state)
{
        struct fixture *f = *state;
        make_mixed_tree(f);
        static const unsigned threads[] = {1, 3, 0, 8};
        struct cairn_digest first;
        char *first_blobs = NULL;
        for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
                char sdir[1200];
                struct cairn_store *s = NULL;
                snprintf(sdir, sizeof(sdir), "%s/store-%zu", f->dir, i);
                assert_int_equal(cairn_store_open(sdir, true, &s), 0);
                struct cairn_build_options o;
                struct cairn_build_result res;
                options(f, &o, "m", "t");
                o.store = s;
                o.threads = threads[i];
                o.progress = i == 0; /* exercise the progress line once (stderr) */
                build_ok(&o, &res);
                char bdir[1300];
                snprintf(bdir, sizeof(bdir), "%s/blobs/sha256", sdir);
                char *blobs = list_dir(bdir);
                if (i == 0) {
                        first = res.manifest;
                        first_blobs = blobs;
                } else {
                        assert_true(cairn_digest_equal(&first, &res.manifest));
                        assert_string_equal(blobs, first_blobs);
                        free(blobs);
                }
                cairn_store_free(s);
        }
        free(first_blobs);
}

static void test_unchanged_rebuild(void **state)
{
        struct fixture *f = *state;
        make_mixed_tree(f);
        struct cairn_build_options o;
        struct cairn_build_result a, b;
        options(f, &o, "org/m", "v1");
        build_ok(&o, &a);
        char *before = list_blobs(f);
        build_ok(&o, &b);
        char *after = list_blobs(f);
        assert_true(cairn_digest_equal(&a.manifest, &b.manifest));
        assert_int_equal(b.new_pack_bytes, 0);
        assert_int_equal(b.new_chunks, 0);
        assert_int_equal(b.packs_written, 0);
        assert_int_equal(b.reused_chunks, b.chunks);
        assert_int_equal(b.chunks, a.chunks);
        assert_int_equal(b.logical_bytes, a.logical_bytes);
        assert_string_equal(before, after);
        /* Into another tag of another name (no previous manifest): same bytes, no new blobs. */
        struct cairn_build_result c;
        options(f, &o, "other", "v1");
        build_ok(&o, &c);
        assert_true(cairn_digest_equal(&a.manifest, &c.manifest));
        assert_int_equal(c.new_pack_bytes, 0);
        free(before);
        free(after);
}

static void insert_at_start(struct fixture *f, const char *rel, size_t n, uint64_t seed)
{
        size_t len;
        uint8_t *old = read_src(f, rel, &len);
        uint8_t *ins = random_bytes(n, seed);
        uint8_t *buf = malloc(len + n);
        assert_non_null(buf);
        memcpy(buf, ins, n);
        memcpy(buf + n, old, len);
        put_file(f, rel, buf, len + n, 0644);
        free(buf);
        free(ins);
        free(old);
}

static void test_insert_dedups(void **state)
{
        struct fixture *f = *state;
        size_t len = 8 * MiB;
        put_random_file(f, "model.bin", len, 42);
        put_random_file(f, "other.bin", 1 * MiB, 43);
        struct cairn_build_options o;
        struct cairn_build_result a, b;
        options(f, &o, "m", "v1");
        o.chunking = medium;
        build_ok(&o, &a);
        assert_true(a.new_pack_bytes >= len);

        insert_at_start(f, "model.bin", 1 * KiB, 99);
        build_ok(&o, &b);
        print_message("insert 1 KiB into 8 MiB: %llu new pack bytes, %llu/%llu chunks reused\n",
                      (unsigned long long)b.new_pack_bytes, (unsigned long long)b.reused_chunks,
                      (unsigned long long)b.chunks);
        assert_false(cairn_digest_equal(&a.manifest, &b.manifest));
        assert_true(b.new_pack_bytes > 0);
        assert_true(b.new_pack_bytes < len / 10);
        assert_true(b.reused_chunks > 0);
        assert_true(b.new_chunks <= 4);

        /* The new version reads back as the new bytes; the old one is intact too. */
        struct cairn_volume *vol = open_digest(f, &b.manifest);
        check_volume_content(f, vol, "", 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(m, "model.bin", &ino), 0);
        assert_int_equal(cairn_manifest_inode(m, ino)->size, len + 1 * KiB);
        /* The reused chunks point into the first build's pack, which is in the blob table. */
        assert_true(m->hdr->blob_count >= 2);
        cairn_volume_free(vol);

        vol = open_digest(f, &a.manifest);
        m = cairn_volume_manifest(vol);
        assert_int_equal(cairn_manifest_resolve(m, "model.bin", &ino), 0);
        uint8_t *orig = random_bytes(len, 42), *got = malloc(len);
        assert_non_null(got);
        assert_int_equal(cairn_volume_read(vol, ino, 0, len, got), (ssize_t)len);
        assert_memory_equal(got, orig, len);
        free(orig);
        free(got);
        cairn_volume_free(vol);
}

static void test_base_dedup(void **state)
{
        struct fixture *f = *state;
        size_t len = 4 * MiB;
        put_random_file(f, "w.bin", len, 7);
        struct cairn_build_options o;
        struct cairn_build_result a, b, c, d;
        options(f, &o, "base/a", "v1");
        o.chunking = medium;
        build_ok(&o, &a);

        insert_at_start(f, "w.bin", 2 * KiB, 8);
        /* Without a base: a new name has no previous manifest, so it is all new. */
        options(f, &o, "base/b", "v1");
        o.chunking = medium;
        build_ok(&o, &b);
        assert_true(b.new_pack_bytes >= len);
        assert_int_equal(b.reused_chunks, 0);

        /* With --base by tag and by digest: only the changed front is new. */
        options(f, &o, "base/c", "v1");
        o.chunking = medium;
        o.base_ref = "base/a:v1";
        build_ok(&o, &c);
        assert_true(c.new_pack_bytes < len / 10);
        assert_true(c.reused_chunks > 0);
        assert_false(cairn_digest_equal(&b.manifest, &c.manifest));

        char ref[300], ds[CAIRN_DIGEST_STR_SIZE];
        cairn_digest_to_string(&a.manifest, ds);
        snprintf(ref, sizeof(ref), "base/a@%s", ds);
        options(f, &o, "base/d", "v1");
        o.chunking = medium;
        o.base_ref = ref;
        build_ok(&o, &d);
        assert_true(d.reused_chunks > 0);
        assert_int_equal(d.reused_chunks, c.reused_chunks);
        /* c wrote the new front chunks; d finds them in no base, so it writes the same pack. */
        assert_int_equal(d.new_pack_bytes, 0);
        assert_int_equal(d.packs_written, 1);
        assert_true(cairn_digest_equal(&c.manifest, &d.manifest));

        struct cairn_volume *vol = open_digest(f, &c.manifest);
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);

        /* A base that does not exist, or does not parse, fails the build. */
        char err[512] = "";
        options(f, &o, "base/e", "v1");
        o.base_ref = "base/a:nope";
        assert_true(cairn_build(&o, NULL, err, sizeof(err)) < 0);
        assert_non_null(strstr(err, "base/a:nope"));
        assert_false(ref_exists(f, "base/e", "v1"));
        o.base_ref = "Not A Ref";
        err[0] = '\0';
        assert_int_equal(cairn_build(&o, NULL, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "Not A Ref"));
        assert_false(ref_exists(f, "base/e", "v1"));
}

static void expect_build_fails(struct fixture *f, const struct cairn_build_options *o,
                               const char *needle)
{
        char err[512];
        struct cairn_build_result res;
        memset(&res, 0x5a, sizeof(res));
        struct cairn_build_result before = res;
        strcpy(err, "stale");
        int r = cairn_build(o, &res, err, sizeof(err));
        if (r >= 0)
                fail_msg("build with %s succeeded", needle);
        if (!strstr(err, needle))
                fail_msg("error message '%s' does not mention '%s'", err, needle);
        assert_memory_equal(&res, &before, sizeof(res));
        /* Also without an error buffer. */
        assert_int_equal(cairn_build(o, NULL, NULL, 0), r);
        (void)f;
}

static void test_failures_write_nothing(void **state)
{
        struct fixture *f = *state;
        put_random_file(f, "x", 100 * KiB, 1);
        struct cairn_build_options o;
        char missing[1200];

        options(f, &o, "Bad Name", "v1");
        expect_build_fails(f, &o, "invalid tag");
        options(f, &o, "m", "..");
        expect_build_fails(f, &o, "invalid tag");
        options(f, &o, "m", "a/b");
        expect_build_fails(f, &o, "invalid tag");
        options(f, &o, "../escape", "v1");
        expect_build_fails(f, &o, "invalid tag");

        snprintf(missing, sizeof(missing), "%s/no-such-dir", f->dir);
        options(f, &o, "m", "v1");
        o.src_dir = missing;
        expect_build_fails(f, &o, missing);
        char file[1200];
        snprintf(file, sizeof(file), "%s/x", f->src);
        o.src_dir = file;
        expect_build_fails(f, &o, file);

        static const struct cairn_chunker_params bad[] = {
            {16 * KiB, 16 * KiB, 64 * KiB}, /* min == avg */
            {4 * KiB, 24 * KiB, 64 * KiB},  /* avg not a power of two */
            {4 * KiB, 64 * KiB, 64 * KiB},  /* avg == max */
            {32, 64, 128},                  /* min under the limit */
            {1 * MiB, 32 * MiB, 128 * MiB}, /* max over the limit */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                options(f, &o, "m", "v1");
                o.chunking = bad[i];
                expect_build_fails(f, &o, "chunk");
        }
        options(f, &o, "m", "v1");
        o.compression_level = 0;
        expect_build_fails(f, &o, "compression");
        o.compression_level = 100;
        expect_build_fails(f, &o, "compression");

        /* Nothing reached the store. */
        char *blobs = list_blobs(f);
        assert_string_equal(blobs, "");
        free(blobs);
        char p[1300];
        snprintf(p, sizeof(p), "%s/refs", f->store_dir);
        blobs = list_dir(p);
        assert_string_equal(blobs, "");
        free(blobs);
        snprintf(p, sizeof(p), "%s/tmp", f->store_dir);
        blobs = list_dir(p);
        assert_string_equal(blobs, "");
        free(blobs);

        /* A failed rebuild leaves an existing tag as it was. */
        struct cairn_build_result ok;
        options(f, &o, "m", "v1");
        build_ok(&o, &ok);
        o.src_dir = missing;
        expect_build_fails(f, &o, missing);
        struct cairn_digest d;
        assert_int_equal(cairn_store_read_ref(f->store, "m", "v1", &d), 0);
        assert_true(cairn_digest_equal(&d, &ok.manifest));
}

/*
 * on_skip runs during the walk, before any file is read: this one pulls a
 * file out from under the build, so that the build fails late, after
 * earlier files went into packs that were already committed.
 */
static void vanish_on_skip(const char *path, const char *why, void *userdata)
{
        struct fixture *f = userdata;
        char p[4096];
        (void)path;
        (void)why;
        src_path(f, "zz-vanishes", p, sizeof(p));
        unlink(p);
}

static void test_late_failure_removes_packs(void **state)
{
        struct fixture *f = *state;
        struct cairn_build_options o;
        struct cairn_build_result res;
        char p[4096];
        put_random_file(f, "a", 300 * KiB, 3);
        options(f, &o, "m", "v1");
        build_ok(&o, &res);
        char *before = list_blobs(f);

        /* New content in two files, each rolled into its own pack, then the missing file. */
        put_random_file(f, "a", 300 * KiB, 4);
        put_random_file(f, "b", 300 * KiB, 5);
        put_random_file(f, "zz-vanishes", 10, 6);
        src_path(f, "fifo", p, sizeof(p));
        assert_int_equal(mkfifo(p, 0600), 0);
        options(f, &o, "m", "v1");
        o.pack_max = 1;
        o.on_skip = vanish_on_skip;
        char err[512] = "";
        int r = cairn_build(&o, NULL, err, sizeof(err));
        assert_int_equal(r, -ENOENT);
        assert_non_null(strstr(err, "zz-vanishes"));

        /* The store is as it was: same blobs, old ref, no temporaries. */
        char *after = list_blobs(f);
        assert_string_equal(after, before);
        struct cairn_digest d;
        assert_int_equal(cairn_store_read_ref(f->store, "m", "v1", &d), 0);
        assert_true(cairn_digest_equal(&d, &res.manifest));
        char tdir[1300];
        snprintf(tdir, sizeof(tdir), "%s/tmp", f->store_dir);
        char *tmp = list_dir(tdir);
        assert_string_equal(tmp, "");
        free(tmp);
        free(before);
        free(after);

        /* The same build without the disappearing act writes two packs and succeeds. */
        put_random_file(f, "zz-vanishes", 10, 6);
        o.on_skip = NULL;
        build_ok(&o, &res);
        assert_true(res.packs_written >= 2);
}

static void test_many_small_files(void **state)
{
        struct fixture *f = *state;
        char name[128];
        enum { DIRS = 20, PER_DIR = 150 };
        for (int d = 0; d < DIRS; d++) {
                snprintf(name, sizeof(name), "dir%02d", d);
                put_dir(f, name);
                for (int i = 0; i < PER_DIR; i++) {
                        /* A tenth of the files share their content with others. */
                        char content[64];
                        int n = snprintf(content, sizeof(content), "file %d of %d\n",
                                         i % 10 == 0 ? 0 : i, i % 10 == 0 ? 0 : d);
                        snprintf(name, sizeof(name), "dir%02d/f%03d", d, i);
                        put_file(f, name, content, (size_t)n, 0644);
                }
        }
        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "v1");
        build_ok(&o, &res);
        assert_int_equal(res.files, DIRS * PER_DIR);
        assert_int_equal(res.dirs, DIRS + 1);
        assert_int_equal(res.chunks, DIRS * PER_DIR);
        /* 15 files per dir hold the one shared text: all but the first are reused. */
        assert_int_equal(res.reused_chunks, DIRS * PER_DIR / 10 - 1);

        struct cairn_volume *vol = open_digest(f, &res.manifest);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        assert_int_equal(cairn_manifest_inode_count(m), 1 + DIRS + DIRS * PER_DIR);
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);
}

static void test_names_and_links(void **state)
{
        struct fixture *f = *state;
        char p[4096], longname[256], target[4096];
        memset(longname, 'n', 255);
        longname[255] = '\0';
        put_file(f, longname, "long", 4, 0644);
        put_file(f, "sp ace", "s", 1, 0644);
        put_file(f, "\xe6\x97\xa5\xe6\x9c\xac", "utf8", 4, 0644);
        put_file(f, "-dash", "d", 1, 0644);
        put_file(f, ".hidden", "h", 1, 0644);
        memset(target, 't', 4095);
        target[4095] = '\0';
        for (int i = 100; i < 4095; i += 100)
                target[i] = '/';
        src_path(f, "longlink", p, sizeof(p));
        assert_int_equal(symlink(target, p), 0);
        src_path(f, "abs", p, sizeof(p));
        assert_int_equal(symlink("/absolute/target", p), 0);
        src_path(f, "dangling", p, sizeof(p));
        assert_int_equal(symlink("does/not/exist", p), 0);
        src_path(f, "loop", p, sizeof(p));
        assert_int_equal(symlink("loop", p), 0);

        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "v1");
        build_ok(&o, &res);
        assert_int_equal(res.symlinks, 4);
        struct cairn_volume *vol = open_digest(f, &res.manifest);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(m, longname, &ino), 0);
        assert_int_equal(cairn_manifest_resolve(m, "\xe6\x97\xa5\xe6\x9c\xac", &ino), 0);
        assert_int_equal(cairn_manifest_resolve(m, ".hidden", &ino), 0);
        assert_int_equal(cairn_manifest_resolve(m, "longlink", &ino), 0);
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
        assert_true(S_ISLNK(in->mode));
        assert_int_equal(in->size, 4095);
        assert_memory_equal(cairn_manifest_string(m, in->first), target, 4095);
        assert_int_equal(cairn_manifest_resolve(m, "loop", &ino), 0);
        in = cairn_manifest_inode(m, ino);
        assert_memory_equal(cairn_manifest_string(m, in->first), "loop", 4);
        /* Entries are sorted bytewise, so readdir order is stable. */
        const struct cairn_manifest_inode *root = cairn_manifest_inode(m, 0);
        for (uint64_t i = 1; i < root->count; i++) {
                const struct cairn_manifest_dirent *x = cairn_manifest_dirent_at(m, 0, i - 1);
                const struct cairn_manifest_dirent *y = cairn_manifest_dirent_at(m, 0, i);
                size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
                int c = memcmp(cairn_manifest_string(m, x->name_offset),
                               cairn_manifest_string(m, y->name_offset), n);
                assert_true(c < 0 || (c == 0 && x->name_len < y->name_len));
        }
        check_volume_content(f, vol, "", 0);
        cairn_volume_free(vol);
}

static void test_empty_source(void **state)
{
        struct fixture *f = *state;
        struct cairn_build_options o;
        struct cairn_build_result res;
        options(f, &o, "m", "empty");
        build_ok(&o, &res);
        assert_int_equal(res.files, 0);
        assert_int_equal(res.dirs, 1);
        assert_int_equal(res.chunks, 0);
        assert_int_equal(res.packs_written, 0);
        assert_int_equal(res.new_pack_bytes, 0);
        struct cairn_volume *vol = open_digest(f, &res.manifest);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        assert_int_equal(cairn_manifest_inode_count(m), 1);
        assert_int_equal(m->hdr->blob_count, 0);
        assert_int_equal(cairn_manifest_inode(m, 0)->count, 0);
        cairn_volume_free(vol);
        /* Only the manifest blob was written. */
        char *blobs = list_blobs(f);
        assert_int_equal(count_lines(blobs), 1);
        free(blobs);
}

/* The ends of the compression level range both give compressed, readable volumes. */
static void test_compression_levels(void **state)
{
        struct fixture *f = *state;
        size_t tlen = 600 * KiB;
        uint8_t *text = malloc(tlen);
        assert_non_null(text);
        uint64_t st = 77;
        for (size_t i = 0; i < tlen; i++)
                text[i] = (uint8_t) "the quick brown fox\n"[splitmix64(&st) % 20];
        put_file(f, "t", text, tlen, 0644);
        free(text);
        static const int levels[] = {1, 19};
        for (size_t i = 0; i < 2; i++) {
                char tag[16];
                struct cairn_build_options o;
                struct cairn_build_result res;
                snprintf(tag, sizeof(tag), "l%d", levels[i]);
                options(f, &o, tag, "v1");
                o.compression_level = levels[i];
                build_ok(&o, &res);
                assert_true(res.new_pack_bytes < tlen * 3 / 4);
                struct cairn_volume *vol = open_digest(f, &res.manifest);
                check_volume_content(f, vol, "", 0);
                cairn_volume_free(vol);
        }
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_options_init),
            T(test_counts_and_skips),
            T(test_skip_without_callback),
            T(test_chunks_follow_chunker),
            T(test_packs_contiguous),
            T(test_deterministic),
            T(test_unchanged_rebuild),
            T(test_insert_dedups),
            T(test_base_dedup),
            T(test_failures_write_nothing),
            T(test_late_failure_removes_packs),
            T(test_many_small_files),
            T(test_names_and_links),
            T(test_empty_source),
            T(test_compression_levels),
        };
        return cmocka_run_group_tests_name("builder", tests, NULL, NULL);
}
