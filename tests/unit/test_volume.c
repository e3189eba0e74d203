/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read path.  One source tree (every node type, files around the chunk
 * size limits, random and compressible data, UTF-8 names, a FIFO) is built
 * once into a temporary file store with small chunk parameters; the tests
 * then open the volume by tag and by digest, with and without a chunk
 * cache, and compare everything with the source: tree shape, metadata,
 * symlink targets, and file bytes read whole and at random offsets and
 * lengths, also from several threads at once under a tiny memory limit.
 *
 * The failure tests damage the store in place (and repair it afterwards):
 * a flipped pack byte must turn into -EIO for exactly the affected range,
 * never into wrong bytes or a poisoned cache; a tampered manifest must be
 * refused at open; a damaged cache entry must be refetched transparently.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/builder.h"
#include "cairn/cache.h"
#include "cairn/manifest.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static const struct cairn_chunker_params params = {4 * KiB, 16 * KiB, 64 * KiB};

#define VOL_NAME  "test/vol"
#define VOL_TAG   "v1"
#define MAX_FILES 64

struct file_info {
        char path[256]; /* relative to the source root */
        uint32_t ino;
        uint64_t size;
        uint8_t *data; /* the source bytes */
};

struct world {
        char dir[1024];
        char src[1100];
        char store_dir[1100];
        struct cairn_store *store;
        struct cairn_digest digest;
        struct cairn_build_result result;
        unsigned skipped;
        char skipped_path[256];
        struct file_info files[MAX_FILES];
        size_t nfiles;
        unsigned scratch_seq;
};

/* ---- helpers ---- */

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
        uint64_t st = seed;
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)splitmix64(&st);
}

/* Text from a small vocabulary: compresses well, but does not repeat in chunk-sized runs. */
static void fill_text(uint8_t *buf, size_t len, uint64_t seed)
{
        static const char *const words[] = {"tensor ",    "weight ", "layer ", "bias ",  "norm ",
                                            "attention ", "head ",   "embed ", "token ", "\n"};
        uint64_t st = seed;
        size_t off = 0;
        while (off < len) {
                const char *w = words[splitmix64(&st) % 10];
                size_t n = strlen(w);
                if (n > len - off)
                        n = len - off;
                memcpy(buf + off, w, n);
                off += n;
        }
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

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -1;
        const uint8_t *p = data;
        while (len) {
                ssize_t n = write(fd, p, len);
                if (n <= 0) {
                        close(fd);
                        return -1;
                }
                p += n;
                len -= (size_t)n;
        }
        if (fchmod(fd, mode) < 0) {
                close(fd);
                return -1;
        }
        return close(fd);
}

static void on_skip(const char *path, const char *why, void *userdata)
{
        struct world *w = userdata;
        (void)why;
        w->skipped++;
        snprintf(w->skipped_path, sizeof(w->skipped_path), "%s", path);
}

/* Source files: path, size, content kind. */
enum kind { RANDOM, TEXT, ZEROS };
struct src_file {
        const char *path;
        size_t size;
        enum kind kind;
        mode_t mode;
};

static const struct src_file src_files[] = {
    {"empty", 0, RANDOM, 0644},
    {"one", 1, RANDOM, 0644},
    {"exec.sh", 100, TEXT, 0755},
    {"private", 3000, RANDOM, 0600},
    {"sp ace \xc3\xa9", 5000, TEXT, 0644},
    {"sizes/min-1", 4 * KiB - 1, RANDOM, 0644},
    {"sizes/min", 4 * KiB, RANDOM, 0644},
    {"sizes/min+1", 4 * KiB + 1, RANDOM, 0644},
    {"sizes/avg-1", 16 * KiB - 1, RANDOM, 0644},
    {"sizes/avg", 16 * KiB, RANDOM, 0644},
    {"sizes/avg+1", 16 * KiB + 1, RANDOM, 0644},
    {"sizes/max-1", 64 * KiB - 1, RANDOM, 0644},
    {"sizes/max", 64 * KiB, RANDOM, 0644},
    {"sizes/max+1", 64 * KiB + 1, RANDOM, 0644},
    {"sizes/2max+3", 128 * KiB + 3, RANDOM, 0644},
    {"big.bin", 2 * MiB + 123, RANDOM, 0644},
    {"text.txt", 1 * MiB, TEXT, 0644},
    {"zeros", 300 * KiB, ZEROS, 0444},
    {"dir/sub/deeper/file", 70000, TEXT, 04755},
    {"dir/a", 10, RANDOM, 0640},
};

static int world_setup(void **state)
{
        struct world *w = calloc(1, sizeof(*w));
        char p[2048];
        if (!w)
                return -1;
        const char *tmp = getenv("TMPDIR");
        snprintf(w->dir, sizeof(w->dir), "%s/cairn-test-volume-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(w->dir)) {
                free(w);
                return -1;
        }
        snprintf(w->src, sizeof(w->src), "%s/src", w->dir);
        snprintf(w->store_dir, sizeof(w->store_dir), "%s/store", w->dir);
        static const char *const dirs[] = {
            "", "/sizes", "/dir", "/dir/sub", "/dir/sub/deeper", "/dir/empty-dir", "/links"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                snprintf(p, sizeof(p), "%s%s", w->src, dirs[i]);
                if (mkdir(p, 0755) < 0)
                        goto fail;
        }
        for (size_t i = 0; i < sizeof(src_files) / sizeof(src_files[0]); i++) {
                const struct src_file *sf = &src_files[i];
                struct file_info *fi = &w->files[w->nfiles++];
                snprintf(fi->path, sizeof(fi->path), "%s", sf->path);
                fi->size = sf->size;
                fi->data = malloc(sf->size ? sf->size : 1);
                if (!fi->data)
                        goto fail;
                if (sf->kind == RANDOM)
                        fill_random(fi->data, sf->size, 1000 + i);
                else if (sf->kind == TEXT)
                        fill_text(fi->data, sf->size, 2000 + i);
                else
                        memset(fi->data, 0, sf->size);
                snprintf(p, sizeof(p), "%s/%s", w->src, sf->path);
                if (write_file(p, fi->data, sf->size, sf->mode) < 0)
                        goto fail;
        }
        /* Ownership and timestamps that differ from the defaults. */
        snprintf(p, sizeof(p), "%s/private", w->src);
        if (geteuid() == 0 && chown(p, 1234, 5678) < 0)
                goto fail;
        struct timespec ts[2] = {{1600000000, 123456789}, {1600000000, 123456789}};
        snprintf(p, sizeof(p), "%s/one", w->src);
        if (utimensat(AT_FDCWD, p, ts, 0) < 0)
                goto fail;
        static const char *const links[][2] = {{"links/rel", "../one"},
                                               {"links/abs", "/etc/hostname"},
                                               {"links/dangling", "nowhere/at/all"},
                                               {"links/dirlink", "../dir"}};
        for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
                snprintf(p, sizeof(p), "%s/%s", w->src, links[i][0]);
                if (symlink(links[i][1], p) < 0)
                        goto fail;
        }
        snprintf(p, sizeof(p), "%s/dir/fifo", w->src);
        if (mkfifo(p, 0644) < 0)
                goto fail;

        if (cairn_store_open(w->store_dir, true, &w->store) < 0)
                goto fail;
        struct cairn_build_options o;
        char err[512] = "";
        cairn_build_options_init(&o);
        o.src_dir = w->src;
        o.store = w->store;
        o.name = VOL_NAME;
        o.tag = VOL_TAG;
        o.chunking = params;
        o.threads = 2;
        o.on_skip = on_skip;
        o.userdata = w;
        if (cairn_build(&o, &w->result, err, sizeof(err)) < 0) {
                fprintf(stderr, "build failed: %s\n", err);
                goto fail;
        }
        w->digest = w->result.manifest;
        *state = w;
        return 0;
fail:
        cairn_store_free(w->store);
        rm_rf(w->dir);
        for (size_t i = 0; i < w->nfiles; i++)
                free(w->files[i].data);
        free(w);
        return -1;
}

static int world_teardown(void **state)
{
        struct world *w = *state;
        cairn_store_free(w->store);
        rm_rf(w->dir);
        for (size_t i = 0; i < w->nfiles; i++)
                free(w->files[i].data);
        free(w);
        return 0;
}

static struct cairn_ref tag_ref(void)
{
        struct cairn_ref r;
        assert_int_equal(cairn_ref_parse(VOL_NAME ":" VOL_TAG, &r), 0);
        return r;
}

static struct cairn_ref digest_ref(const struct cairn_digest *d)
{
        struct cairn_ref r;
        char s[400], ds[CAIRN_DIGEST_STR_SIZE];
        cairn_digest_to_string(d, ds);
        snprintf(s, sizeof(s), VOL_NAME "@%s", ds);
        assert_int_equal(cairn_ref_parse(s, &r), 0);
        return r;
}

/* A fresh, empty cache directory for one test. */
static void scratch_cache(struct world *w, char *buf, size_t len)
{
        snprintf(buf, len, "%s/cache-%u", w->dir, w->scratch_seq++);
}

static struct cairn_volume *open_volume(struct world *w, const char *cache_dir, size_t mem)
{
        struct cairn_volume *vol = NULL;
        struct cairn_ref ref = tag_ref();
        struct cairn_volume_options o = {.cache_dir = cache_dir, .memory_limit = mem};
        char err[512] = "";
        int r = cairn_volume_open(w->store, &ref, &o, &vol, err, sizeof(err));
        if (r < 0)
                fail_msg("cannot open volume: %d %s", r, err);
        assert_non_null(vol);
        return vol;
}

static void resolve_files(struct world *w, const struct cairn_manifest *m)
{
        for (size_t i = 0; i < w->nfiles; i++)
                assert_int_equal(cairn_manifest_resolve(m, w->files[i].path, &w->files[i].ino), 0);
}

static struct file_info *file_named(struct world *w, const char *path)
{
        for (size_t i = 0; i < w->nfiles; i++)
                if (!strcmp(w->files[i].path, path))
                        return &w->files[i];
        fail_msg("no source file '%s'", path);
        return NULL;
}

/* Reads a whole file through the volume in pieces of varying size and compares. */
static void check_file_whole(struct cairn_volume *vol, const struct file_info *fi, uint64_t seed)
{
        uint8_t *buf = malloc(fi->size + 1);
        assert_non_null(buf);
        uint64_t st = seed, off = 0;
        while (off < fi->size) {
                size_t want = (size_t)(splitmix64(&st) % (200 * KiB)) + 1;
                ssize_t n = cairn_volume_read(vol, fi->ino, off, want, buf + off);
                if (n <= 0)
                        fail_msg("read of '%s' at %llu returned %zd", fi->path,
                                 (unsigned long long)off, n);
                size_t expect = want < fi->size - off ? want : (size_t)(fi->size - off);
                assert_int_equal((size_t)n, expect);
                off += (uint64_t)n;
        }
        if (fi->size && memcmp(buf, fi->data, fi->size) != 0)
                fail_msg("content of '%s' differs", fi->path);
        assert_int_equal(cairn_volume_read(vol, fi->ino, fi->size, 10, buf), 0);
        assert_int_equal(cairn_volume_read(vol, fi->ino, fi->size + 1000, 10, buf), 0);
        assert_int_equal(cairn_volume_read(vol, fi->ino, UINT64_MAX, 10, buf), 0);
        free(buf);
}

static void check_file_random(struct cairn_volume *vol, const struct file_info *fi, uint64_t seed,
                              int rounds)
{
        if (fi->size == 0)
                return;
        uint8_t *buf = malloc(300 * KiB);
        assert_non_null(buf);
        uint64_t st = seed;
        for (int i = 0; i < rounds; i++) {
                uint64_t off = splitmix64(&st) % fi->size;
                size_t len = (size_t)(splitmix64(&st) % (i % 4 == 0 ? 300 * KiB : 5000)) + 1;
                ssize_t n = cairn_volume_read(vol, fi->ino, off, len, buf);
                size_t expect = len < fi->size - off ? len : (size_t)(fi->size - off);
                if (n != (ssize_t)expect)
                        fail_msg("'%s' off %llu len %zu: got %zd want %zu", fi->path,
                                 (unsigned long long)off, len, n, expect);
                if (memcmp(buf, fi->data + off, expect) != 0)
                        fail_msg("'%s' off %llu len %zu: wrong bytes", fi->path,
                                 (unsigned long long)off, len);
        }
        free(buf);
}

static void check_all_files(struct world *w, struct cairn_volume *vol)
{
        resolve_files(w, cairn_volume_manifest(vol));
        for (size_t i = 0; i < w->nfiles; i++) {
                check_file_whole(vol, &w->files[i], i);
                check_file_random(vol, &w->files[i], 100 + i, 50);
        }
}

/* ---- opening ---- */

static void test_build_result(void **state)
{
        struct world *w = *state;
        /* The FIFO was skipped and reported; everything else made it in. */
        assert_int_equal(w->skipped, 1);
        assert_string_equal(w->skipped_path, "dir/fifo");
        assert_int_equal(w->result.skipped, 1);
        assert_int_equal(w->result.files, w->nfiles);
        assert_int_equal(w->result.symlinks, 4);
        assert_int_equal(w->result.dirs, 7);
        struct cairn_digest d;
        assert_int_equal(cairn_store_read_ref(w->store, VOL_NAME, VOL_TAG, &d), 0);
        assert_true(cairn_digest_equal(&d, &w->digest));
}

static void test_open_by_tag_and_digest(void **state)
{
        struct world *w = *state;
        char cache[1200];
        scratch_cache(w, cache, sizeof(cache));
        for (int with_cache = 0; with_cache < 2; with_cache++) {
                struct cairn_volume *a = NULL, *b = NULL;
                struct cairn_ref rt = tag_ref(), rd = digest_ref(&w->digest);
                struct cairn_volume_options o = {.cache_dir = with_cache ? cache : NULL};
                char err[512] = "";
                assert_int_equal(cairn_volume_open(w->store, &rt, &o, &a, err, sizeof(err)), 0);
                assert_int_equal(cairn_volume_open(w->store, &rd, &o, &b, err, sizeof(err)), 0);
                assert_true(cairn_digest_equal(cairn_volume_digest(a), &w->digest));
                assert_true(cairn_digest_equal(cairn_volume_digest(b), &w->digest));
                assert_ptr_equal(cairn_volume_store(a), w->store);
                const struct cairn_manifest *ma = cairn_volume_manifest(a);
                const struct cairn_manifest *mb = cairn_volume_manifest(b);
                assert_int_equal(ma->size, mb->size);
                assert_memory_equal(ma->base, mb->base, ma->size);
                assert_int_equal(ma->size, w->result.manifest_size);
                struct cairn_digest md;
                cairn_sha256(ma->base, ma->size, &md);
                assert_true(cairn_digest_equal(&md, &w->digest));
                /* The manifest records the parameters the build used. */
                assert_int_equal(ma->hdr->chunk_min, params.min_size);
                assert_int_equal(ma->hdr->chunk_avg, params.avg_size);
                assert_int_equal(ma->hdr->chunk_max, params.max_size);
                cairn_volume_free(a);
                cairn_volume_free(b);
        }
        cairn_volume_free(NULL);
}

/* ---- tree and metadata ---- */

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void compare_tree(struct world *w, const struct cairn_manifest *m, const char *rel,
                         uint32_t ino, unsigned *ret_nodes)
{
        char path[2048];
        snprintf(path, sizeof(path), "%s%s%s", w->src, *rel ? "/" : "", rel);
        DIR *d = opendir(path);
        assert_non_null(d);
        char *names[128];
        size_t n = 0;
        for (struct dirent *de; (de = readdir(d));) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                struct stat st;
                char child[4096];
                snprintf(child, sizeof(child), "%s/%s", path, de->d_name);
                assert_int_equal(lstat(child, &st), 0);
                if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
                        continue;
                assert_true(n < 128);
                names[n++] = strdup(de->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof(names[0]), name_cmp);

        const struct cairn_manifest_inode *dir = cairn_manifest_inode(m, ino);
        assert_true(S_ISDIR(dir->mode));
        assert_int_equal(dir->count, n);
        assert_null(cairn_manifest_dirent_at(m, ino, n));
        unsigned subdirs = 0;
        for (size_t i = 0; i < n; i++) {
                const struct cairn_manifest_dirent *de = cairn_manifest_dirent_at(m, ino, i);
                assert_non_null(de);
                assert_int_equal(de->name_len, strlen(names[i]));
                assert_memory_equal(cairn_manifest_string(m, de->name_offset), names[i],
                                    de->name_len);
                uint32_t looked = UINT32_MAX;
                assert_int_equal(cairn_manifest_lookup(m, ino, names[i], strlen(names[i]), &looked),
                                 0);
                assert_int_equal(looked, de->inode);

                const struct cairn_manifest_inode *in = cairn_manifest_inode(m, de->inode);
                struct stat st;
                char child[4096], crel[1024];
                snprintf(child, sizeof(child), "%s/%s", path, names[i]);
                snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", names[i]);
                assert_int_equal(lstat(child, &st), 0);
                assert_int_equal(in->parent, ino);
                assert_int_equal(in->mode, st.st_mode & (S_IFMT | 07777));
                assert_int_equal(in->uid, st.st_uid);
                assert_int_equal(in->gid, st.st_gid);
                assert_int_equal(in->mtime_sec, st.st_mtim.tv_sec);
                assert_int_equal(in->mtime_nsec, st.st_mtim.tv_nsec);
                uint32_t resolved = UINT32_MAX;
                assert_int_equal(cairn_manifest_resolve(m, crel, &resolved), 0);
                assert_int_equal(resolved, de->inode);
                (*ret_nodes)++;
                if (S_ISDIR(st.st_mode)) {
                        subdirs++;
                        compare_tree(w, m, crel, de->inode, ret_nodes);
                } else if (S_ISLNK(st.st_mode)) {
                        char target[4096];
                        ssize_t tl = readlink(child, target, sizeof(target));
                        assert_true(tl > 0);
                        assert_int_equal(in->size, (uint64_t)tl);
                        assert_int_equal(in->count, (uint64_t)tl);
                        assert_memory_equal(cairn_manifest_string(m, in->first), target,
                                            (size_t)tl);
                        assert_int_equal(in->nlink, 1);
                } else {
                        assert_int_equal(in->size, (uint64_t)st.st_size);
                        assert_int_equal(in->nlink, 1);
                }
                free(names[i]);
        }
        assert_int_equal(dir->nlink, 2 + subdirs);
}

static void test_tree_and_metadata(void **state)
{
        struct world *w = *state;
        struct cairn_volume *vol = open_volume(w, NULL, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        unsigned nodes = 0;
        compare_tree(w, m, "", 0, &nodes);
        /* Every inode but the root was reached through exactly one dirent. */
        assert_int_equal(nodes + 1, cairn_manifest_inode_count(m));

        /* Root's own metadata comes from the source directory. */
        struct stat st;
        assert_int_equal(stat(w->src, &st), 0);
        assert_int_equal(cairn_manifest_inode(m, 0)->mode, st.st_mode & (S_IFMT | 07777));

        /* The specific values set up above, in case the source fs dropped them. */
        uint32_t ino;
        assert_int_equal(cairn_manifest_resolve(m, "one", &ino), 0);
        assert_int_equal(cairn_manifest_inode(m, ino)->mtime_sec, 1600000000);
        assert_int_equal(cairn_manifest_inode(m, ino)->mtime_nsec, 123456789);
        assert_int_equal(cairn_manifest_resolve(m, "dir/sub/deeper/file", &ino), 0);
        assert_int_equal(cairn_manifest_inode(m, ino)->mode, S_IFREG | 04755);
        assert_int_equal(cairn_manifest_resolve(m, "zeros", &ino), 0);
        assert_int_equal(cairn_manifest_inode(m, ino)->mode, S_IFREG | 0444);
        if (geteuid() == 0) {
                assert_int_equal(cairn_manifest_resolve(m, "private", &ino), 0);
                assert_int_equal(cairn_manifest_inode(m, ino)->uid, 1234);
                assert_int_equal(cairn_manifest_inode(m, ino)->gid, 5678);
                assert_int_equal(cairn_manifest_inode(m, ino)->mode, S_IFREG | 0600);
        }
        assert_int_equal(cairn_manifest_resolve(m, "dir/empty-dir", &ino), 0);
        assert_int_equal(cairn_manifest_inode(m, ino)->count, 0);
        assert_int_equal(cairn_manifest_resolve(m, "links/abs", &ino), 0);
        assert_memory_equal(cairn_manifest_string(m, cairn_manifest_inode(m, ino)->first),
                            "/etc/hostname", 13);
        /* The skipped FIFO is not in the index. */
        assert_int_equal(cairn_manifest_resolve(m, "dir/fifo", &ino), -ENOENT);
        cairn_volume_free(vol);
}

static void test_lookup_and_resolve(void **state)
{
        struct world *w = *state;
        struct cairn_volume *vol = open_volume(w, NULL, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint32_t ino = 77, dir, sub;

        assert_int_equal(cairn_manifest_resolve(m, "", &ino), 0);
        assert_int_equal(ino, 0);
        assert_int_equal(cairn_manifest_resolve(m, "dir", &dir), 0);
        assert_int_equal(cairn_manifest_lookup(m, dir, "sub", 3, &sub), 0);
        assert_int_equal(cairn_manifest_resolve(m, "dir/sub", &ino), 0);
        assert_int_equal(ino, sub);
        assert_int_equal(cairn_manifest_resolve(m, "dir//sub/", &ino), 0);
        assert_int_equal(ino, sub);
        assert_int_equal(cairn_manifest_resolve(m, "sp ace \xc3\xa9", &ino), 0);
        assert_true(S_ISREG(cairn_manifest_inode(m, ino)->mode));

        ino = 77;
        assert_int_equal(cairn_manifest_resolve(m, "nope", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "dir/nope", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "one/x", &ino), -ENOTDIR);
        assert_int_equal(cairn_manifest_resolve(m, "DIR", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "di", &ino), -ENOENT);
        assert_int_equal(cairn_manifest_resolve(m, "dirx", &ino), -ENOENT);
        /* Symlinks are not followed by resolve. */
        assert_int_equal(cairn_manifest_resolve(m, "links/dirlink/a", &ino), -ENOTDIR);
        assert_int_equal(ino, 77);
        assert_int_equal(cairn_manifest_lookup(m, dir, "", 0, &ino), -ENOENT);
        assert_int_equal(cairn_manifest_lookup(m, dir, "sub", 2, &ino), -ENOENT);
        cairn_volume_free(vol);
}

/* ---- reading ---- */

static void test_read_all(void **state)
{
        struct world *w = *state;
        struct cairn_volume *vol = open_volume(w, NULL, 0);
        check_all_files(w, vol);
        cairn_volume_free(vol);
}

static void test_read_all_cached(void **state)
{
        struct world *w = *state;
        char cache[1200];
        scratch_cache(w, cache, sizeof(cache));
        /* Cold cache, then warm cache with a fresh in-memory table. */
        for (int pass = 0; pass < 2; pass++) {
                struct cairn_volume *vol = open_volume(w, cache, 0);
                check_all_files(w, vol);
                cairn_volume_free(vol);
        }
        char p[1300];
        snprintf(p, sizeof(p), "%s/chunks", cache);
        DIR *d = opendir(p);
        assert_non_null(d);
        unsigned fanout = 0;
        for (struct dirent *de; (de = readdir(d));)
                fanout += de->d_name[0] != '.';
        closedir(d);
        assert_true(fanout > 10);
}

static void test_read_tiny_memory(void **state)
{
        struct world *w = *state;
        struct cairn_volume *vol = open_volume(w, NULL, 1);
        check_all_files(w, vol);
        cairn_volume_free(vol);
}

static void test_read_errors(void **state)
{
        struct world *w = *state;
        struct cairn_volume *vol = open_volume(w, NULL, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint8_t buf[16];
        uint32_t ino;
        assert_int_equal(cairn_volume_read(vol, 0, 0, sizeof(buf), buf), -EISDIR);
        assert_int_equal(cairn_manifest_resolve(m, "links/rel", &ino), 0);
        assert_int_equal(cairn_volume_read(vol, ino, 0, sizeof(buf), buf), -EINVAL);
        assert_int_equal(cairn_volume_read(vol, cairn_manifest_inode_count(m), 0, 1, buf), -EINVAL);
        assert_int_equal(cairn_volume_read(vol, UINT32_MAX, 0, 1, buf), -EINVAL);
        assert_int_equal(cairn_manifest_resolve(m, "empty", &ino), 0);
        assert_int_equal(cairn_volume_read(vol, ino, 0, sizeof(buf), buf), 0);
        assert_int_equal(cairn_manifest_resolve(m, "one", &ino), 0);
        assert_int_equal(cairn_volume_read(vol, ino, 0, 0, buf), 0);
        assert_int_equal(cairn_volume_read(vol, ino, 0, sizeof(buf), buf), 1);
        assert_int_equal(buf[0], file_named(w, "one")->data[0]);

        /* fetch_chunk: a chunk index past the table is refused. */
        uint64_t count = m->hdr->chunk_count;
        uint8_t *big = malloc(params.max_size);
        assert_non_null(big);
        assert_int_equal(cairn_volume_fetch_chunk(vol, count, big), -EINVAL);
        assert_int_equal(cairn_volume_fetch_chunk(vol, count + 1000000, big), -EINVAL);
        assert_int_equal(cairn_volume_fetch_chunk(vol, 1ull << 40, big), -EINVAL);
        /* And every chunk in the table fetches and verifies. */
        for (uint64_t i = 0; i < count; i++) {
                struct cairn_digest d;
                assert_int_equal(cairn_volume_fetch_chunk(vol, i, big), 0);
                cairn_sha256(big, m->chunks[i].size, &d);
                assert_true(cairn_digest_equal(&d, &m->chunks[i].id));
        }
        free(big);
        cairn_volume_free(vol);
}

/* ---- damage in the store ---- */

static void blob_path(struct world *w, const struct cairn_digest *d, char *buf, size_t len)
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(d, hex);
        snprintf(buf, len, "%s/blobs/sha256/%s", w->store_dir, hex);
}

static void flip_byte(const char *path, uint64_t off)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
        b ^= 0x40;
        assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
        close(fd);
}

/* A chunk in the middle of file ino whose id occurs nowhere else in the volume. */
static uint64_t pick_unique_chunk(const struct cairn_manifest *m, uint32_t ino, bool want_zstd)
{
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, ino);
        assert_true(in->count >= 3);
        for (uint64_t k = in->first + in->count / 2; k < in->first + in->count - 1; k++) {
                const struct cairn_manifest_chunk *c = &m->chunks[k];
                if (!!(c->flags & CAIRN_CHUNK_ZSTD) != want_zstd)
                        continue;
                bool unique = true;
                for (uint64_t j = 0; j < m->hdr->chunk_count && unique; j++)
                        if (j != k && cairn_digest_equal(&m->chunks[j].id, &c->id))
                                unique = false;
                if (unique)
                        return k;
        }
        fail_msg("no suitable chunk in inode %u", ino);
        return 0;
}

static void check_corrupt_pack(struct world *w, const char *file, bool zstd)
{
        char cache[1200], pack[1300];
        scratch_cache(w, cache, sizeof(cache));
        struct cairn_volume *vol = open_volume(w, cache, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        resolve_files(w, m);
        struct file_info *fi = file_named(w, file);
        uint64_t k = pick_unique_chunk(m, fi->ino, zstd);
        const struct cairn_manifest_chunk *c = &m->chunks[k];
        blob_path(w, &m->blobs[c->blob].digest, pack, sizeof(pack));
        uint64_t where = c->blob_offset + c->stored_size / 2;
        flip_byte(pack, where);

        uint8_t *buf = malloc(fi->size);
        assert_non_null(buf);
        /* The whole file: -EIO, never a short count or wrong bytes. */
        assert_int_equal(cairn_volume_read(vol, fi->ino, 0, fi->size, buf), -EIO);
        /* Everything before the bad chunk still reads correctly... */
        assert_int_equal(cairn_volume_read(vol, fi->ino, 0, c->file_offset, buf),
                         (ssize_t)c->file_offset);
        assert_memory_equal(buf, fi->data, c->file_offset);
        /* ...any range touching it fails... */
        assert_int_equal(cairn_volume_read(vol, fi->ino, c->file_offset, 1, buf), -EIO);
        assert_int_equal(cairn_volume_read(vol, fi->ino, c->file_offset + c->size - 1, 1, buf),
                         -EIO);
        assert_int_equal(cairn_volume_read(vol, fi->ino, c->file_offset - 1, 2, buf), -EIO);
        /* ...and what follows it is fine again. */
        uint64_t after = c->file_offset + c->size;
        assert_int_equal(cairn_volume_read(vol, fi->ino, after, fi->size - after, buf),
                         (ssize_t)(fi->size - after));
        assert_memory_equal(buf, fi->data + after, fi->size - after);
        /* Other files keep working. */
        for (size_t i = 0; i < w->nfiles; i++)
                if (&w->files[i] != fi)
                        check_file_random(vol, &w->files[i], 7 + i, 10);
        /* fetch_chunk says -EIO for the bad chunk, 0 for its neighbour. */
        uint8_t *cb = malloc(params.max_size);
        assert_non_null(cb);
        assert_int_equal(cairn_volume_fetch_chunk(vol, k, cb), -EIO);
        assert_int_equal(cairn_volume_fetch_chunk(vol, k - 1, cb), 0);
        assert_memory_equal(cb, fi->data + m->chunks[k - 1].file_offset, m->chunks[k - 1].size);
        /* Nothing unverified reached the chunk cache. */
        struct cairn_cache *cc = NULL;
        assert_int_equal(cairn_cache_open(cache, &cc), 0);
        assert_int_equal(cairn_cache_get(cc, &c->id, cb, c->size), -ENOENT);
        cairn_cache_free(cc);

        /* Repaired: the same handle reads it, so the failure was not remembered. */
        flip_byte(pack, where);
        check_file_whole(vol, fi, 5);
        cairn_volume_free(vol);
        free(cb);
        free(buf);
}

static void test_corrupt_pack_raw(void **state)
{
        check_corrupt_pack(*state, "big.bin", false);
}

static void test_corrupt_pack_zstd(void **state)
{
        check_corrupt_pack(*state, "text.txt", true);
}

/* A pack shorter than the index says: the read fails with -EIO too. */
static void test_truncated_pack(void **state)
{
        struct world *w = *state;
        char pack[1300], saved[1400];
        struct cairn_volume *vol = open_volume(w, NULL, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        resolve_files(w, m);
        struct file_info *fi = file_named(w, "big.bin");
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, fi->ino);
        const struct cairn_manifest_chunk *last = &m->chunks[in->first + in->count - 1];
        blob_path(w, &m->blobs[last->blob].digest, pack, sizeof(pack));
        snprintf(saved, sizeof(saved), "%s.saved", pack);
        /* Keep the original aside (hard link) and put a truncated copy in its place. */
        assert_int_equal(link(pack, saved), 0);
        assert_int_equal(unlink(pack), 0);
        int in_fd = open(saved, O_RDONLY | O_CLOEXEC);
        int out_fd = open(pack, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(in_fd >= 0 && out_fd >= 0);
        uint64_t keep = last->blob_offset + last->stored_size - 1;
        uint8_t *tmp = malloc(keep);
        assert_non_null(tmp);
        assert_int_equal(pread(in_fd, tmp, keep, 0), (ssize_t)keep);
        assert_int_equal(write(out_fd, tmp, keep), (ssize_t)keep);
        close(in_fd);
        close(out_fd);
        free(tmp);

        uint8_t b[16];
        assert_int_equal(cairn_volume_read(vol, fi->ino, fi->size - 1, 1, b), -EIO);
        assert_int_equal(rename(saved, pack), 0);
        assert_int_equal(cairn_volume_read(vol, fi->ino, fi->size - 1, 1, b), 1);
        assert_int_equal(b[0], fi->data[fi->size - 1]);
        cairn_volume_free(vol);
}

static void test_tampered_manifest(void **state)
{
        struct world *w = *state;
        char path[1300], err[512] = "";
        struct cairn_volume *vol = NULL;
        struct cairn_ref rt = tag_ref(), rd = digest_ref(&w->digest);
        blob_path(w, &w->digest, path, sizeof(path));
        /* A byte in the header, in the inode table, in the last byte of the string table. */
        uint64_t offsets[] = {20, 200, w->result.manifest_size - 1};
        for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
                flip_byte(path, offsets[i]);
                for (int by_digest = 0; by_digest < 2; by_digest++) {
                        err[0] = '\0';
                        int r = cairn_volume_open(w->store, by_digest ? &rd : &rt, NULL, &vol, err,
                                                  sizeof(err));
                        assert_int_equal(r, -EINVAL);
                        assert_null(vol);
                        if (!strstr(err, "digest"))
                                fail_msg("message does not mention the digest: '%s'", err);
                }
                flip_byte(path, offsets[i]);
        }
        assert_int_equal(cairn_volume_open(w->store, &rt, NULL, &vol, err, sizeof(err)), 0);
        cairn_volume_free(vol);
}

/* Refs that lead nowhere or to something that is not a manifest. */
static void test_bad_refs(void **state)
{
        struct world *w = *state;
        char err[512];
        struct cairn_volume *vol = NULL;
        struct cairn_ref ref;

        assert_int_equal(cairn_ref_parse(VOL_NAME ":nope", &ref), 0);
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "nope"));
        assert_int_equal(cairn_ref_parse("other/name:" VOL_TAG, &ref), 0);
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -ENOENT);

        /* A digest with no blob behind it. */
        struct cairn_digest missing;
        cairn_sha256("no such manifest", 16, &missing);
        ref = digest_ref(&missing);
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -ENOENT);
        assert_true(strlen(err) > 0);

        /* A real blob that is not a manifest, and an empty one, each behind a tag. */
        struct cairn_digest junk, empty;
        assert_int_equal(cairn_store_put_blob(w->store, "CAIRNIDX but not really", 23, &junk, NULL),
                         0);
        assert_int_equal(cairn_store_put_blob(w->store, "", 0, &empty, NULL), 0);
        assert_int_equal(cairn_store_write_ref(w->store, VOL_NAME, "junk", &junk), 0);
        assert_int_equal(cairn_store_write_ref(w->store, VOL_NAME, "empty", &empty), 0);
        assert_int_equal(cairn_ref_parse(VOL_NAME ":junk", &ref), 0);
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -EINVAL);
        assert_true(strlen(err) > 0);
        assert_int_equal(cairn_ref_parse(VOL_NAME ":empty", &ref), 0);
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -EINVAL);
        assert_true(strlen(err) > 0);

        /* A pack blob (valid digest, wrong content) named as a manifest. */
        const struct cairn_manifest *m;
        struct cairn_volume *good = open_volume(w, NULL, 0);
        m = cairn_volume_manifest(good);
        ref = digest_ref(&m->blobs[0].digest);
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -EINVAL);
        cairn_volume_free(good);

        /* A malformed ref object. */
        char p[1400];
        snprintf(p, sizeof(p), "%s/refs/%s/broken", w->store_dir, VOL_NAME);
        assert_int_equal(write_file(p, "sha256:xyz\n", 11, 0644), 0);
        assert_int_equal(cairn_ref_parse(VOL_NAME ":broken", &ref), 0);
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, err, sizeof(err)), -EINVAL);
        assert_true(strlen(err) > 0);

        /*
         * A cache dir that cannot be a directory costs speed, not the volume:
         * it opens without a cache, says why, and reads come from the store.
         */
        struct cairn_volume_options o = {.cache_dir = p};
        ref = tag_ref();
        err[0] = '\0';
        assert_int_equal(cairn_volume_open(w->store, &ref, &o, &vol, err, sizeof(err)), 0);
        assert_true(cairn_volume_cache_error(vol) < 0);
        uint32_t ino;
        char byte;
        assert_int_equal(cairn_manifest_resolve(cairn_volume_manifest(vol), "one", &ino), 0);
        assert_int_equal(cairn_volume_read(vol, ino, 0, 1, &byte), 1);
        cairn_volume_free(vol);
        vol = NULL;

        /* The error buffer is optional. */
        assert_int_equal(cairn_ref_parse(VOL_NAME ":nope", &ref), 0);
        assert_int_equal(cairn_volume_open(w->store, &ref, NULL, &vol, NULL, 0), -ENOENT);
}

/* ---- the chunk cache in the read path ---- */

static void test_cache_serves_and_heals(void **state)
{
        struct world *w = *state;
        char cache[1200], pack[1300];
        scratch_cache(w, cache, sizeof(cache));
        struct cairn_volume *vol = open_volume(w, cache, 0);
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        resolve_files(w, m);
        struct file_info *fi = file_named(w, "big.bin");
        check_file_whole(vol, fi, 1);
        cairn_volume_free(vol);

        /* Damage every cache entry of the file in a different way. */
        vol = open_volume(w, cache, 0);
        m = cairn_volume_manifest(vol);
        const struct cairn_manifest_inode *in = cairn_manifest_inode(m, fi->ino);
        for (uint64_t k = in->first; k < in->first + in->count; k++) {
                char hex[CAIRN_DIGEST_HEX_LEN + 1], p[1400];
                cairn_digest_to_hex(&m->chunks[k].id, hex);
                snprintf(p, sizeof(p), "%s/chunks/%.2s/%s", cache, hex, hex);
                /* A data byte (data starts at 0), the data cut short, the trailer's magic. */
                size_t io = cairn_cache_io_size(m->chunks[k].size);
                if (k % 3 == 0) {
                        flip_byte(p, (k * 977) % m->chunks[k].size);
                } else if (k % 3 == 1) {
                        assert_int_equal(truncate(p, 1), 0);
                } else {
                        flip_byte(p, io - CAIRN_CACHE_ENTRY_TRAILER_SIZE);
                }
        }
        /* Refetched from the store transparently: right bytes, no error. */
        check_file_whole(vol, fi, 2);
        cairn_volume_free(vol);
        struct cairn_cache *cc = NULL;
        uint8_t *cb = malloc(params.max_size);
        assert_non_null(cb);
        assert_int_equal(cairn_cache_open(cache, &cc), 0);
        vol = open_volume(w, NULL, 0);
        m = cairn_volume_manifest(vol);
        in = cairn_manifest_inode(m, fi->ino);
        for (uint64_t k = in->first; k < in->first + in->count; k++)
                assert_int_equal(cairn_cache_get(cc, &m->chunks[k].id, cb, m->chunks[k].size), 0);

        /*
         * The cache really serves reads: with a chunk's pack bytes damaged, a
         * volume with the warm cache still reads the file; one without fails.
         */
        uint64_t k = pick_unique_chunk(m, fi->ino, false);
        const struct cairn_manifest_chunk *c = &m->chunks[k];
        blob_path(w, &m->blobs[c->blob].digest, pack, sizeof(pack));
        flip_byte(pack, c->blob_offset);
        struct cairn_volume *cached = open_volume(w, cache, 0);
        check_file_whole(cached, fi, 3);
        assert_int_equal(cairn_volume_read(vol, fi->ino, c->file_offset, 1, cb), -EIO);
        flip_byte(pack, c->blob_offset);
        cairn_volume_free(cached);
        cairn_volume_free(vol);
        cairn_cache_free(cc);
        free(cb);
}

/* ---- concurrency ---- */

struct reader {
        struct world *w;
        struct cairn_volume *vol;
        unsigned id;
        int errors;
};

static void *reader_main(void *arg)
{
        struct reader *rd = arg;
        struct world *w = rd->w;
        uint8_t *buf = malloc(256 * KiB);
        uint64_t st = 0xabcdef00u + rd->id;
        if (!buf) {
                rd->errors++;
                return NULL;
        }
        for (int i = 0; i < 400; i++) {
                /* Half the reads hit the same hot range in big.bin from every thread. */
                const struct file_info *fi;
                uint64_t off;
                size_t len;
                if (i % 2 == 0) {
                        fi = &w->files[15]; /* big.bin */
                        off = (uint64_t)(i % 10) * 100 * KiB;
                        len = 150 * KiB;
                } else {
                        fi = &w->files[splitmix64(&st) % w->nfiles];
                        if (fi->size == 0)
                                continue;
                        off = splitmix64(&st) % fi->size;
                        len = (size_t)(splitmix64(&st) % (256 * KiB)) + 1;
                }
                ssize_t n = cairn_volume_read(rd->vol, fi->ino, off, len, buf);
                size_t expect = len < fi->size - off ? len : (size_t)(fi->size - off);
                if (n != (ssize_t)expect || memcmp(buf, fi->data + off, expect) != 0)
                        rd->errors++;
        }
        free(buf);
        return NULL;
}

static void run_readers(struct world *w, const char *cache, size_t mem)
{
        enum { N = 8 };
        struct cairn_volume *vol = open_volume(w, cache, mem);
        resolve_files(w, cairn_volume_manifest(vol));
        assert_string_equal(w->files[15].path, "big.bin");
        pthread_t th[N];
        struct reader rd[N];
        for (unsigned i = 0; i < N; i++) {
                rd[i] = (struct reader){w, vol, i, 0};
                assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
        }
        for (unsigned i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                assert_int_equal(rd[i].errors, 0);
        }
        cairn_volume_free(vol);
}

static void test_concurrent_readers(void **state)
{
        struct world *w = *state;
        char cache[1200];
        run_readers(w, NULL, 100 * KiB);
        run_readers(w, NULL, 0);
        scratch_cache(w, cache, sizeof(cache));
        run_readers(w, cache, 100 * KiB);
        run_readers(w, cache, 100 * KiB); /* warm */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_build_result),
            cmocka_unit_test(test_open_by_tag_and_digest),
            cmocka_unit_test(test_tree_and_metadata),
            cmocka_unit_test(test_lookup_and_resolve),
            cmocka_unit_test(test_read_all),
            cmocka_unit_test(test_read_all_cached),
            cmocka_unit_test(test_read_tiny_memory),
            cmocka_unit_test(test_read_errors),
            cmocka_unit_test(test_corrupt_pack_raw),
            cmocka_unit_test(test_corrupt_pack_zstd),
            cmocka_unit_test(test_truncated_pack),
            cmocka_unit_test(test_tampered_manifest),
            cmocka_unit_test(test_bad_refs),
            cmocka_unit_test(test_cache_serves_and_heals),
            cmocka_unit_test(test_concurrent_readers),
        };
        return cmocka_run_group_tests_name("volume", tests, world_setup, world_teardown);
}
