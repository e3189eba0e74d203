/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The chunk cache.  Round trips, misses, and above all damage: an entry
 * with a flipped data byte, a bad magic, a wrong length or CRC field, cut
 * short or with a byte appended must be detected, removed and reported as
 * a miss (-ENOENT), so the reader refetches and re-verifies.  Also the
 * entry layout on disk, temporaries never left behind, several threads
 * filling one cache, and the default directory for root and for other
 * users (the latter checked in a child that drops to an unprivileged uid
 * when the test runs as root).
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/cache.h"
#include "cairn/crc32c.h"
#include "cairn/digest.h"

struct fixture {
        char dir[1024];  /* the temp dir */
        char cdir[1100]; /* dir/cache */
        struct cairn_cache *cache;
};

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
        snprintf(f->dir, sizeof(f->dir), "%s/cairn-test-cache-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(f->dir)) {
                free(f);
                return -1;
        }
        snprintf(f->cdir, sizeof(f->cdir), "%s/cache", f->dir);
        if (cairn_cache_open(f->cdir, &f->cache) < 0) {
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
        cairn_cache_free(f->cache);
        rm_rf(f->dir);
        free(f);
        return 0;
}

static uint8_t *pattern(size_t len, unsigned seed)
{
        uint8_t *p = malloc(len ? len : 1);
        assert_non_null(p);
        uint32_t x = seed * 2654435761u + 7;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t)x;
        }
        return p;
}

static void entry_path(const struct fixture *f, const struct cairn_digest *id, char *buf,
                       size_t len)
{
        char hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_digest_to_hex(id, hex);
        int n = snprintf(buf, len, "%s/chunks/%.2s/%s", f->cdir, hex, hex);
        assert_true(n > 0 && (size_t)n < len);
}

static bool exists(const char *path)
{
        struct stat st;
        return lstat(path, &st) == 0;
}

static int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return -1;
        int n = 0;
        for (struct dirent *de; (de = readdir(d));)
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static int tmp_entries(const struct fixture *f)
{
        char p[1200];
        snprintf(p, sizeof(p), "%s/tmp", f->cdir);
        return count_entries(p);
}

/* A chunk of len bytes, verified the way the read path does: id = SHA-256. */
struct chunk {
        uint8_t *data;
        uint32_t len;
        struct cairn_digest id;
};

static struct chunk make_chunk(uint32_t len, unsigned seed)
{
        struct chunk c = {pattern(len, seed), len, {{0}}};
        cairn_sha256(c.data, len, &c.id);
        return c;
}

static void test_open_layout(void **state)
{
        struct fixture *f = *state;
        char p[1200];
        static const char *const dirs[] = {"chunks", "manifests", "tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                struct stat st;
                snprintf(p, sizeof(p), "%s/%s", f->cdir, dirs[i]);
                assert_int_equal(stat(p, &st), 0);
                assert_true(S_ISDIR(st.st_mode));
        }
        assert_string_equal(cairn_cache_dir(f->cache), f->cdir);
        /* Reopening an existing cache works; so does a second handle at once. */
        struct cairn_cache *c2 = NULL;
        assert_int_equal(cairn_cache_open(f->cdir, &c2), 0);
        cairn_cache_free(c2);
        cairn_cache_free(NULL);

        /* A regular file where the directory should be. */
        snprintf(p, sizeof(p), "%s/afile", f->dir);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
        c2 = NULL;
        assert_true(cairn_cache_open(p, &c2) < 0);
        assert_null(c2);
}

static void test_round_trip(void **state)
{
        struct fixture *f = *state;
        static const uint32_t sizes[] = {1, 2, 15, 16, 17, 4096, 65537, 1u << 20, 3000001};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                struct chunk c = make_chunk(sizes[i], (unsigned)i);
                uint8_t *buf = malloc(c.len);
                assert_non_null(buf);
                assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), -ENOENT);
                assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
                memset(buf, 0, c.len);
                assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), 0);
                assert_memory_equal(buf, c.data, c.len);
                /* A hit does not consume the entry. */
                memset(buf, 0, c.len);
                assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), 0);
                assert_memory_equal(buf, c.data, c.len);

                /*
                 * The documented entry: the bytes at 0, zero padding, and a
                 * 16-byte trailer (magic, size, CRC-32C) ending the file at
                 * roundup(size + 16, 4096); accounted as exactly that length.
                 */
                char p[1200];
                entry_path(f, &c.id, p, sizeof(p));
                int fd = open(p, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                struct stat st;
                assert_int_equal(fstat(fd, &st), 0);
                size_t io = cairn_cache_io_size(c.len);
                assert_int_equal(io % CAIRN_CACHE_IO_ALIGN, 0);
                assert_true(io >= c.len + CAIRN_CACHE_ENTRY_TRAILER_SIZE &&
                            io < c.len + CAIRN_CACHE_ENTRY_TRAILER_SIZE + CAIRN_CACHE_IO_ALIGN);
                assert_int_equal(st.st_size, (off_t)io);
                assert_int_equal(cairn_cache_entry_bytes(c.len), (uint64_t)st.st_size);
                uint8_t *file = malloc(io);
                assert_non_null(file);
                assert_int_equal(pread(fd, file, io, 0), (ssize_t)io);
                close(fd);
                assert_memory_equal(file, c.data, c.len);
                for (size_t k = c.len; k < io - CAIRN_CACHE_ENTRY_TRAILER_SIZE; k++)
                        if (file[k] != 0)
                                fail_msg("%u-byte entry: padding byte %zu is %u", c.len, k, file[k]);
                const uint8_t *hdr = file + io - CAIRN_CACHE_ENTRY_TRAILER_SIZE;
                assert_memory_equal(hdr, "CAIRNCE2", 8);
                assert_memory_equal(hdr, CAIRN_CACHE_ENTRY_MAGIC, 8);
                uint32_t size_le = (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 |
                                   (uint32_t)hdr[10] << 16 | (uint32_t)hdr[11] << 24;
                uint32_t crc_le = (uint32_t)hdr[12] | (uint32_t)hdr[13] << 8 |
                                  (uint32_t)hdr[14] << 16 | (uint32_t)hdr[15] << 24;
                assert_int_equal(size_le, c.len);
                assert_int_equal(crc_le, cairn_crc32c(0, c.data, c.len));
                free(file);
                free(buf);
                free(c.data);
        }
        assert_int_equal(tmp_entries(f), 0);
}

static void test_put_twice_and_many(void **state)
{
        struct fixture *f = *state;
        struct chunk c = make_chunk(1000, 1);
        uint8_t buf[1000];
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), 0);
        assert_memory_equal(buf, c.data, c.len);
        free(c.data);

        /* Enough entries to spread over many of the 256 fan-out directories. */
        for (unsigned i = 0; i < 600; i++) {
                struct chunk k = make_chunk(100 + i, 1000 + i);
                assert_int_equal(cairn_cache_put(f->cache, &k.id, k.data, k.len), 0);
                free(k.data);
        }
        for (unsigned i = 0; i < 600; i++) {
                struct chunk k = make_chunk(100 + i, 1000 + i);
                uint8_t b[700];
                assert_int_equal(cairn_cache_get(f->cache, &k.id, b, k.len), 0);
                assert_memory_equal(b, k.data, k.len);
                free(k.data);
        }
        char p[1200];
        snprintf(p, sizeof(p), "%s/chunks", f->cdir);
        assert_true(count_entries(p) > 200);
        assert_int_equal(tmp_entries(f), 0);
}

static void test_miss(void **state)
{
        struct fixture *f = *state;
        struct chunk c = make_chunk(100, 2);
        uint8_t buf[100];
        memset(buf, 0x5a, sizeof(buf));
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), -ENOENT);
        /* A neighbour in the same fan-out directory is still a miss. */
        struct cairn_digest other = c.id;
        other.bytes[31] ^= 1;
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &other, buf, c.len), -ENOENT);
        free(c.data);
}

enum damage {
        FLIP_DATA_FIRST,
        FLIP_DATA_MIDDLE,
        FLIP_DATA_LAST,
        FLIP_MAGIC,
        FLIP_SIZE,
        FLIP_CRC,
        FLIP_PADDING,
        ZERO_TRAILER,
        TRUNCATE_DATA,
        TRUNCATE_TRAILER,
        TRUNCATE_EMPTY,
        APPEND_BYTE,
        APPEND_MANY,
        APPEND_BLOCK,
        DAMAGE_COUNT,
};

static const char *const damage_names[] = {
    "flip first data byte", "flip middle data byte", "flip last data byte",
    "flip magic",           "flip size field",       "flip crc field",
    "flip a padding byte",  "zero the trailer",      "truncate data",
    "truncate trailer",     "truncate to empty",     "append one byte",
    "append many bytes",    "append a whole block",
};
_Static_assert(sizeof(damage_names) / sizeof(damage_names[0]) == DAMAGE_COUNT, "damage names");

static void apply_damage(const char *path, enum damage how, uint32_t len)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        const off_t end = (off_t)cairn_cache_io_size(len);
        const off_t trailer = end - CAIRN_CACHE_ENTRY_TRAILER_SIZE;
        off_t pos = -1;
        switch (how) {
        case FLIP_DATA_FIRST:
                pos = 0;
                break;
        case FLIP_DATA_MIDDLE:
                pos = len / 2;
                break;
        case FLIP_DATA_LAST:
                pos = len - 1;
                break;
        case FLIP_MAGIC:
                pos = trailer + 3;
                break;
        case FLIP_SIZE:
                pos = trailer + 8;
                break;
        case FLIP_CRC:
                pos = trailer + 14;
                break;
        case FLIP_PADDING:
                assert_true(trailer > (off_t)len); /* the sizes tested all have padding */
                pos = len + (trailer - len) / 2;
                break;
        case ZERO_TRAILER: {
                /* What a torn write whose last block never reached the disk leaves. */
                static const char zeros[CAIRN_CACHE_ENTRY_TRAILER_SIZE];
                assert_int_equal(pwrite(fd, zeros, sizeof(zeros), trailer), (ssize_t)sizeof(zeros));
                break;
        }
        case TRUNCATE_DATA:
                assert_int_equal(ftruncate(fd, len - 1), 0);
                break;
        case TRUNCATE_TRAILER:
                assert_int_equal(ftruncate(fd, trailer + 10), 0);
                break;
        case TRUNCATE_EMPTY:
                assert_int_equal(ftruncate(fd, 0), 0);
                break;
        case APPEND_BYTE:
                assert_int_equal(pwrite(fd, "x", 1, end), 1);
                break;
        case APPEND_MANY: {
                char junk[5000];
                memset(junk, 'j', sizeof(junk));
                assert_int_equal(pwrite(fd, junk, sizeof(junk), end), (ssize_t)sizeof(junk));
                break;
        }
        case APPEND_BLOCK: {
                /* Still a whole number of blocks: only the length check can tell. */
                char junk[CAIRN_CACHE_IO_ALIGN];
                memset(junk, 0, sizeof(junk));
                assert_int_equal(pwrite(fd, junk, sizeof(junk), end), (ssize_t)sizeof(junk));
                break;
        }
        case DAMAGE_COUNT:
                break;
        }
        if (pos >= 0) {
                uint8_t b;
                assert_int_equal(pread(fd, &b, 1, pos), 1);
                b ^= 0x10;
                assert_int_equal(pwrite(fd, &b, 1, pos), 1);
        }
        close(fd);
}

static uint64_t chunks_on_disk(const char *cdir);

/* The three ways to read an entry: copy out, zero-copy into an aligned buffer, batch. */
enum read_path { READ_COPY, READ_INTO, READ_BATCH, READ_PATHS };
static const char *const read_path_names[] = {"get", "get_into", "get_batch"};

static void *aligned_buf(size_t len)
{
        void *p = aligned_alloc(CAIRN_CACHE_IO_ALIGN,
                                (len + CAIRN_CACHE_IO_ALIGN - 1) & ~(size_t)(CAIRN_CACHE_IO_ALIGN - 1));
        assert_non_null(p);
        return p;
}

/* Reads c through path; buf: an aligned buffer of cairn_cache_io_size(c->len) bytes. */
static int read_via(struct cairn_cache *cache, enum read_path path, const struct chunk *c,
                    uint8_t *buf)
{
        switch (path) {
        case READ_COPY:
                return cairn_cache_get(cache, &c->id, buf, c->len);
        case READ_INTO:
                return cairn_cache_get_into(cache, &c->id, buf, cairn_cache_io_size(c->len),
                                            c->len);
        default: {
                /* With a miss on either side, so that it is a real batch. */
                struct cairn_digest none;
                cairn_sha256("not cached", 10, &none);
                uint8_t other[16];
                struct cairn_cache_item items[3] = {
                    {.id = &none, .data = other, .cap = sizeof(other), .size = sizeof(other)},
                    {.id = &c->id, .data = buf, .cap = cairn_cache_io_size(c->len), .size = c->len},
                    {.id = &none, .data = other, .cap = sizeof(other), .size = sizeof(other)},
                };
                int results[3] = {1, 1, 1};
                cairn_cache_get_batch(cache, items, 3, results);
                assert_int_equal(results[0], -ENOENT);
                assert_int_equal(results[2], -ENOENT);
                return results[1];
        }
        }
}

static void test_damaged_entries(void **state)
{
        struct fixture *f = *state;
        static const uint32_t sizes[] = {1, 333, 70000};
        for (int path = 0; path < READ_PATHS; path++) {
                for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                        for (int how = 0; how < DAMAGE_COUNT; how++) {
                                struct chunk c = make_chunk(sizes[s], (unsigned)(how * 10 + s));
                                uint8_t *buf = aligned_buf(cairn_cache_io_size(c.len));
                                char p[1200];
                                entry_path(f, &c.id, p, sizeof(p));
                                assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
                                assert_true(exists(p));
                                uint64_t before = cairn_cache_usage(f->cache);
                                apply_damage(p, (enum damage)how, c.len);
                                int r = read_via(f->cache, (enum read_path)path, &c, buf);
                                if (r != -ENOENT)
                                        fail_msg("%s: %s on a %u-byte entry: got %d, want -ENOENT",
                                                 read_path_names[path], damage_names[how], c.len, r);
                                if (exists(p))
                                        fail_msg("%s: %s on a %u-byte entry: entry not removed",
                                                 read_path_names[path], damage_names[how], c.len);
                                /*
                                 * The removal gave back what the put had reserved; with
                                 * the length damaged too, never more (an over-count is
                                 * safe, prune recounts; an under-count would break the limit).
                                 */
                                uint64_t after = cairn_cache_usage(f->cache);
                                if (how < TRUNCATE_DATA)
                                        assert_int_equal(after, before - cairn_cache_entry_bytes(c.len));
                                else
                                        assert_true(after >= before - cairn_cache_entry_bytes(c.len) &&
                                                    after < before);
                                /* Repaired by the next put, like a refetch would. */
                                assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
                                memset(buf, 0, c.len);
                                assert_int_equal(read_via(f->cache, (enum read_path)path, &c, buf), 0);
                                assert_memory_equal(buf, c.data, c.len);
                                free(buf);
                                free(c.data);
                        }
                }
        }
}

/* An entry of format v1 (16-byte header, then the data) is damaged to a v2 reader. */
static void test_v1_entry_is_damaged(void **state)
{
        struct fixture *f = *state;
        /* 4080 bytes: the v1 file is 4096 bytes long, the length of the v2 entry too. */
        static const uint32_t sizes[] = {100, 4080, 70000};
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                for (int path = 0; path < READ_PATHS; path++) {
                        struct chunk c = make_chunk(sizes[s], 4000 + (unsigned)s);
                        char p[1200], shard[1200];
                        entry_path(f, &c.id, p, sizeof(p));
                        snprintf(shard, sizeof(shard), "%.*s", (int)(strrchr(p, '/') - p), p);
                        mkdir(shard, 0755);
                        uint8_t hdr[16];
                        uint32_t size = c.len, crc = cairn_crc32c(0, c.data, c.len);
                        memcpy(hdr, "CAIRNCE1", 8);
                        for (int k = 0; k < 4; k++) {
                                hdr[8 + k] = (uint8_t)(size >> (8 * k));
                                hdr[12 + k] = (uint8_t)(crc >> (8 * k));
                        }
                        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                        assert_true(fd >= 0);
                        assert_int_equal(write(fd, hdr, 16), 16);
                        assert_int_equal(write(fd, c.data, c.len), (ssize_t)c.len);
                        close(fd);
                        uint8_t *buf = aligned_buf(cairn_cache_io_size(c.len));
                        assert_int_equal(read_via(f->cache, (enum read_path)path, &c, buf), -ENOENT);
                        assert_false(exists(p));
                        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
                        assert_int_equal(read_via(f->cache, (enum read_path)path, &c, buf), 0);
                        assert_memory_equal(buf, c.data, c.len);
                        assert_int_equal(unlink(p), 0);
                        free(buf);
                        free(c.data);
                }
        }
}

/*
 * Every combination of writer and reader buffer: aligned or not, with
 * room for the whole entry or not, through O_DIRECT and buffered handles
 * (entries written by one are read by the other).  A put never writes into
 * its buffer; a read never writes past cap.
 */
static void check_paths(struct cairn_cache *w, struct cairn_cache *r, const char *what)
{
        static const uint32_t sizes[] = {0, 1, 4079, 4080, 4081, 4096, 8176, 8192, 65537, 1u << 20};
        enum { GUARD = 8192 };
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                struct chunk c = make_chunk(sizes[i], 7000 + (unsigned)i);
                size_t io = cairn_cache_io_size(c.len);
                for (int src_aligned = 0; src_aligned < 2; src_aligned++) {
                        /* The source buffer with guard bytes after it, all checked afterwards. */
                        uint8_t *src_mem = aligned_buf(io + GUARD + 1);
                        uint8_t *src = src_mem + (src_aligned ? 0 : 1);
                        memcpy(src, c.data, c.len);
                        memset(src + c.len, 0xa5, io + GUARD - c.len);
                        uint64_t before = cairn_cache_usage(w);
                        assert_int_equal(cairn_cache_put(w, &c.id, src, c.len), 0);
                        assert_int_equal(cairn_cache_usage(w), before + cairn_cache_entry_bytes(c.len));
                        assert_memory_equal(src, c.data, c.len);
                        for (size_t k = c.len; k < io + GUARD; k++)
                                if (src[k] != 0xa5)
                                        fail_msg("%s: put of %u bytes wrote byte %zu of its buffer",
                                                 what, c.len, k);
                        free(src_mem);

                        uint8_t *dst_mem = aligned_buf(io + GUARD + 1);
                        /* {offset, cap} of the reads: in place, aligned short, unaligned. */
                        const size_t shapes[][2] = {{0, io}, {0, c.len}, {1, io}, {1, c.len}};
                        for (size_t sh = 0; sh < 4; sh++) {
                                uint8_t *dst = dst_mem + shapes[sh][0];
                                size_t cap = shapes[sh][1];
                                memset(dst, 0x3c, io + GUARD);
                                int got = cairn_cache_get_into(r, &c.id, dst, cap, c.len);
                                if (got != 0)
                                        fail_msg("%s: get_into %u bytes (offset %zu, cap %zu): %d",
                                                 what, c.len, shapes[sh][0], cap, got);
                                assert_memory_equal(dst, c.data, c.len);
                                for (size_t k = cap; k < io + GUARD; k++)
                                        if (dst[k] != 0x3c)
                                                fail_msg("%s: get_into %u bytes (cap %zu) wrote byte %zu",
                                                         what, c.len, cap, k);
                        }
                        memset(dst_mem + 1, 0, c.len);
                        assert_int_equal(cairn_cache_get(r, &c.id, dst_mem + 1, c.len), 0);
                        assert_memory_equal(dst_mem + 1, c.data, c.len);
                        /* A buffer smaller than the chunk is refused, not overrun. */
                        if (c.len)
                                assert_int_equal(cairn_cache_get_into(r, &c.id, dst_mem, c.len - 1, c.len),
                                                 -EINVAL);
                        free(dst_mem);

                        /* The entry's length is its accounting. */
                        struct stat st;
                        char p[2048], hex[CAIRN_DIGEST_HEX_LEN + 1];
                        cairn_digest_to_hex(&c.id, hex);
                        snprintf(p, sizeof(p), "%s/chunks/%.2s/%s", cairn_cache_dir(w), hex, hex);
                        assert_int_equal(stat(p, &st), 0);
                        assert_int_equal((uint64_t)st.st_size, cairn_cache_entry_bytes(c.len));
                        assert_int_equal(unlink(p), 0);
                        /* Unlinked behind the cache's back: give its bytes back by hand. */
                        cairn_cache_prune(w, UINT64_MAX, &(struct cairn_cache_stats){0});
                }
                free(c.data);
        }
}

static void test_buffer_paths(void **state)
{
        struct fixture *f = *state;
        struct cairn_cache *buffered = NULL;
        struct cairn_cache_options o = {.buffered_io = true};
        assert_int_equal(cairn_cache_open_with(f->cdir, &o, &buffered), 0);
        assert_false(cairn_cache_direct_io(buffered));
        print_message("cache in %s: %s\n", f->cdir,
                      cairn_cache_direct_io(f->cache) ? "O_DIRECT" : "buffered (O_DIRECT refused)");
        check_paths(f->cache, f->cache, "default");
        check_paths(buffered, buffered, "buffered");
        check_paths(f->cache, buffered, "default -> buffered");
        check_paths(buffered, f->cache, "buffered -> default");
        cairn_cache_free(buffered);
        assert_int_equal(tmp_entries(f), 0);
}

/*
 * A cache on tmpfs (/dev/shm): before Linux 6.6 tmpfs refuses O_DIRECT,
 * so the probe must turn it off; since, it takes it.  Either way every
 * path works and verify agrees.
 */
static void test_tmpfs(void **state)
{
        (void)state;
        char dir[64] = "/dev/shm/cairn-test-cache-XXXXXX";
        if (!mkdtemp(dir))
                skip();
        char cdir[128];
        snprintf(cdir, sizeof(cdir), "%s/cache", dir);
        struct cairn_cache *c = NULL;
        assert_int_equal(cairn_cache_open(cdir, &c), 0);
        print_message("cache on tmpfs: %s\n",
                      cairn_cache_direct_io(c) ? "O_DIRECT" : "buffered (O_DIRECT refused)");
        check_paths(c, c, "tmpfs");
        struct chunk k = make_chunk(70000, 77);
        assert_int_equal(cairn_cache_put(c, &k.id, k.data, k.len), 0);
        struct cairn_cache_stats st;
        assert_int_equal(cairn_cache_verify(c, NULL, NULL, &st), 0);
        assert_int_equal(st.checked, 1);
        assert_int_equal(st.damaged, 0);
        assert_int_equal(st.bytes, cairn_cache_entry_bytes(k.len));
        free(k.data);
        cairn_cache_free(c);
        rm_rf(dir);
}

/* A batch of hits, misses and damaged entries, over more than one submission. */
static void test_get_batch(void **state)
{
        struct fixture *f = *state;
        enum { N = 150 };
        struct chunk cs[N];
        struct cairn_cache_item items[N];
        uint8_t *mem[N];
        int results[N];
        for (unsigned i = 0; i < N; i++) {
                cs[i] = make_chunk(1000 + i * 331, 9000 + i);
                size_t io = cairn_cache_io_size(cs[i].len);
                mem[i] = aligned_buf(io + 1);
                /* Buffers of every shape: in place, aligned short, unaligned. */
                uint8_t *data = mem[i] + (i % 3 == 2 ? 1 : 0);
                items[i] = (struct cairn_cache_item){.id = &cs[i].id, .data = data,
                                                     .cap = i % 3 == 0 ? io : cs[i].len,
                                                     .size = cs[i].len};
                if (i % 5 != 4) /* every fifth is a miss */
                        assert_int_equal(cairn_cache_put(f->cache, &cs[i].id, cs[i].data, cs[i].len), 0);
                if (i % 7 == 6 && i % 5 != 4) { /* and every seventh of the others damaged */
                        char p[1200];
                        entry_path(f, &cs[i].id, p, sizeof(p));
                        apply_damage(p, (enum damage)((i / 7) % DAMAGE_COUNT), cs[i].len);
                }
        }
        cairn_cache_get_batch(f->cache, items, N, results);
        uint64_t expect_usage = 0;
        for (unsigned i = 0; i < N; i++) {
                char p[1200];
                entry_path(f, &cs[i].id, p, sizeof(p));
                if (i % 5 == 4 || i % 7 == 6) {
                        if (results[i] != -ENOENT)
                                fail_msg("item %u (%s): got %d, want -ENOENT", i,
                                         i % 5 == 4 ? "miss" : "damaged", results[i]);
                        assert_false(exists(p));
                } else {
                        if (results[i] != 0)
                                fail_msg("item %u: got %d, want a hit", i, results[i]);
                        assert_memory_equal(items[i].data, cs[i].data, cs[i].len);
                        expect_usage += cairn_cache_entry_bytes(cs[i].len);
                }
        }
        /* A truncated entry may stay over-counted (safe) until a prune recounts. */
        assert_true(cairn_cache_usage(f->cache) >= expect_usage);
        assert_int_equal(chunks_on_disk(f->cdir), expect_usage);
        struct cairn_cache_stats st;
        assert_int_equal(cairn_cache_prune(f->cache, UINT64_MAX, &st), 0);
        assert_int_equal(cairn_cache_usage(f->cache), expect_usage);
        /* A buffer smaller than its chunk is refused without touching the others. */
        items[0].cap = items[0].size - 1;
        cairn_cache_get_batch(f->cache, items, 2, results);
        assert_int_equal(results[0], -EINVAL);
        assert_int_equal(results[1], 0);
        for (unsigned i = 0; i < N; i++) {
                free(mem[i]);
                free(cs[i].data);
        }
}

/* An entry stored under another chunk's id cannot be told apart by CRC; the size check can. */
static void test_wrong_size(void **state)
{
        struct fixture *f = *state;
        struct chunk c = make_chunk(4096, 3);
        uint8_t *buf = malloc(8192);
        assert_non_null(buf);
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len - 1), -ENOENT);
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len + 1), -ENOENT);
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, 8192), -ENOENT);
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, 16), -ENOENT);
        /* And the right size still works after a repair. */
        assert_int_equal(cairn_cache_put(f->cache, &c.id, c.data, c.len), 0);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), 0);
        assert_memory_equal(buf, c.data, c.len);
        free(buf);
        free(c.data);
}

/* Entries from a crashed writer in tmp/ are invisible to readers. */
static void test_tmp_invisible(void **state)
{
        struct fixture *f = *state;
        struct chunk c = make_chunk(200, 4);
        uint8_t buf[200];
        char p[1200];
        snprintf(p, sizeof(p), "%s/tmp/partial", f->cdir);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, CAIRN_CACHE_ENTRY_MAGIC, 8), 8);
        close(fd);
        assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), -ENOENT);
        free(c.data);
}

static void test_manifest_path(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest d;
        char buf[2048], want[2048], hex[CAIRN_DIGEST_HEX_LEN + 1];
        cairn_sha256("manifest", 8, &d);
        cairn_digest_to_hex(&d, hex);
        snprintf(want, sizeof(want), "%s/manifests/%s", f->cdir, hex);
        assert_int_equal(cairn_cache_manifest_path(f->cache, &d, buf, sizeof(buf)), 0);
        assert_string_equal(buf, want);
        size_t need = strlen(want) + 1;
        assert_int_equal(cairn_cache_manifest_path(f->cache, &d, buf, need), 0);
        assert_int_equal(cairn_cache_manifest_path(f->cache, &d, buf, need - 1), -ENAMETOOLONG);
}

struct filler {
        struct cairn_cache *cache;
        unsigned id;
        int failures;
};

static void *filler_main(void *arg)
{
        struct filler *fl = arg;
        /* All threads put and get the same 64 chunks, in different orders. */
        for (unsigned round = 0; round < 4; round++) {
                for (unsigned k = 0; k < 64; k++) {
                        unsigned i = (k * 7 + fl->id * 13 + round) % 64;
                        struct chunk c = make_chunk(5000 + i * 100, 500 + i);
                        uint8_t *buf = malloc(c.len);
                        if (!buf || cairn_cache_put(fl->cache, &c.id, c.data, c.len) < 0)
                                fl->failures++;
                        else if (cairn_cache_get(fl->cache, &c.id, buf, c.len) == 0 &&
                                 memcmp(buf, c.data, c.len) != 0)
                                fl->failures++; /* a hit must never return wrong bytes */
                        free(buf);
                        free(c.data);
                }
        }
        return NULL;
}

static void test_concurrent(void **state)
{
        struct fixture *f = *state;
        enum { N = 6 };
        pthread_t th[N];
        struct filler fl[N];
        for (unsigned i = 0; i < N; i++) {
                fl[i] = (struct filler){f->cache, i, 0};
                assert_int_equal(pthread_create(&th[i], NULL, filler_main, &fl[i]), 0);
        }
        for (unsigned i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                assert_int_equal(fl[i].failures, 0);
        }
        for (unsigned i = 0; i < 64; i++) {
                struct chunk c = make_chunk(5000 + i * 100, 500 + i);
                uint8_t *buf = malloc(c.len);
                assert_non_null(buf);
                assert_int_equal(cairn_cache_get(f->cache, &c.id, buf, c.len), 0);
                assert_memory_equal(buf, c.data, c.len);
                free(buf);
                free(c.data);
        }
        assert_int_equal(tmp_entries(f), 0);
}

/* ---- default directory ---- */

static void test_default_dir_root(void **state)
{
        (void)state;
        if (geteuid() != 0)
                skip();
        char buf[4096];
        /* Root ignores XDG_CACHE_HOME and HOME. */
        setenv("XDG_CACHE_HOME", "/xdg", 1);
        setenv("HOME", "/home/someone", 1);
        assert_int_equal(cairn_cache_default_dir(buf, sizeof(buf)), 0);
        assert_string_equal(buf, "/var/cache/cairn");
        assert_int_equal(cairn_cache_default_dir(buf, strlen("/var/cache/cairn") + 1), 0);
        assert_int_equal(cairn_cache_default_dir(buf, strlen("/var/cache/cairn")), -ENAMETOOLONG);
}

/* One case of the non-root branch: environment in, result line out. */
struct env_case {
        const char *xdg;  /* NULL: unset */
        const char *home; /* NULL: unset */
        size_t buflen;
        const char *want; /* expected path, or "ERR <n>" */
};

static const struct env_case env_cases[] = {
    {"/xdg/cache", "/home/u", 4096, "/xdg/cache/cairn"},
    {NULL, "/home/u", 4096, "/home/u/.cache/cairn"},
    {"", "/home/u", 4096, "/home/u/.cache/cairn"},         /* empty XDG is ignored */
    {"relative", "/home/u", 4096, "/home/u/.cache/cairn"}, /* so is a relative one */
    {NULL, NULL, 4096, "ERR -2"},
    {NULL, "relative", 4096, "ERR -2"},
    {"/xdg/cache", NULL, 4096, "/xdg/cache/cairn"},
    {"/xdg/cache", "/home/u", 10, "ERR -36"},
};

static void run_env_cases(int out)
{
        for (size_t i = 0; i < sizeof(env_cases) / sizeof(env_cases[0]); i++) {
                const struct env_case *c = &env_cases[i];
                char buf[4096], line[4200];
                if (c->xdg)
                        setenv("XDG_CACHE_HOME", c->xdg, 1);
                else
                        unsetenv("XDG_CACHE_HOME");
                if (c->home)
                        setenv("HOME", c->home, 1);
                else
                        unsetenv("HOME");
                int r = cairn_cache_default_dir(buf, c->buflen);
                int n = r < 0 ? snprintf(line, sizeof(line), "ERR %d\n", r)
                              : snprintf(line, sizeof(line), "%s\n", buf);
                if (write(out, line, (size_t)n) != n)
                        _exit(3);
        }
}

static void test_default_dir_non_root(void **state)
{
        (void)state;
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(pfd[0]);
                /* As root, become an unprivileged user first (nobody's usual ids). */
                if (geteuid() == 0 &&
                    (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0))
                        _exit(77);
                run_env_cases(pfd[1]);
                _exit(0);
        }
        close(pfd[1]);
        char out[8192];
        size_t len = 0;
        for (;;) {
                ssize_t n = read(pfd[0], out + len, sizeof(out) - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        out[len] = '\0';
        close(pfd[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                skip();
        assert_int_equal(WEXITSTATUS(status), 0);
        char *save = NULL, *line = strtok_r(out, "\n", &save);
        for (size_t i = 0; i < sizeof(env_cases) / sizeof(env_cases[0]); i++) {
                assert_non_null(line);
                if (strcmp(line, env_cases[i].want) != 0)
                        fail_msg("case %zu (XDG_CACHE_HOME=%s HOME=%s): got '%s' want '%s'", i,
                                 env_cases[i].xdg ? env_cases[i].xdg : "(unset)",
                                 env_cases[i].home ? env_cases[i].home : "(unset)", line,
                                 env_cases[i].want);
                line = strtok_r(NULL, "\n", &save);
        }
}

/* ---- size limit, eviction, maintenance ---- */

static void fill_entry(uint8_t *buf, size_t len, unsigned seed, struct cairn_digest *ret_id)
{
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 9));
        cairn_sha256(buf, len, ret_id);
}

static int sum_entry_bytes(const char *path, const struct stat *st, int flag, struct FTW *ftw);
static uint64_t disk_bytes;
static int sum_entry_bytes(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)ftw;
        if (flag == FTW_F && strstr(path, "/chunks/"))
                disk_bytes += cairn_cache_entry_bytes((uint32_t)(st->st_size - 16));
        return 0;
}

static uint64_t chunks_on_disk(const char *cdir)
{
        disk_bytes = 0;
        nftw(cdir, sum_entry_bytes, 16, FTW_PHYS);
        return disk_bytes;
}

static void test_limit_holds(void **state)
{
        struct fixture *f = *state;
        struct cairn_cache *c = NULL;
        const size_t len = 60000;
        const uint64_t limit = 10 * cairn_cache_entry_bytes(len);
        struct cairn_cache_options o = {.max_bytes = limit + CAIRN_CACHE_FIXED_BYTES,
                                        .no_free_floor = true};
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        assert_int_equal(cairn_cache_open_with(f->cdir, &o, &c), 0);
        for (unsigned i = 0; i < 100; i++) {
                struct cairn_digest id;
                fill_entry(buf, len, i, &id);
                assert_int_equal(cairn_cache_put(c, &id, buf, (uint32_t)len), 0);
                assert_true(cairn_cache_usage(c) <= limit);
                assert_true(chunks_on_disk(f->cdir) <= limit);
        }
        /* The most recent entry is still there and reads back. */
        struct cairn_digest id;
        fill_entry(buf, len, 99, &id);
        assert_int_equal(cairn_cache_get(c, &id, buf, (uint32_t)len), 0);
        /* An entry larger than the whole limit is refused, not forced in. */
        uint8_t *big = calloc(1, 11 * len);
        assert_non_null(big);
        cairn_sha256(big, 11 * len, &id);
        assert_int_equal(cairn_cache_put(c, &id, big, (uint32_t)(11 * len)), -ENOSPC);
        free(big);
        free(buf);
        cairn_cache_free(c);
}

static void test_lru_evicts_least_recently_used(void **state)
{
        struct fixture *f = *state;
        struct cairn_cache *c = NULL;
        const size_t len = 4000;
        /* Room for exactly four entries besides the usage page and the directories. */
        struct cairn_cache_options o = {.max_bytes = 4 * cairn_cache_entry_bytes(len) +
                                                     CAIRN_CACHE_FIXED_BYTES,
                                        .no_free_floor = true};
        uint8_t buf[4000];
        struct cairn_digest ids[5];
        assert_int_equal(cairn_cache_open_with(f->cdir, &o, &c), 0);
        for (unsigned i = 0; i < 4; i++) {
                fill_entry(buf, len, i, &ids[i]);
                assert_int_equal(cairn_cache_put(c, &ids[i], buf, (uint32_t)len), 0);
        }
        /* Make entry 1 the least recently used: last use an hour ago, the others now. */
        for (unsigned i = 0; i < 4; i++) {
                char hex[65], path[1300];
                cairn_digest_to_hex(&ids[i], hex);
                snprintf(path, sizeof(path), "%s/chunks/%.2s/%s", f->cdir, hex, hex);
                struct timespec ts[2] = {{.tv_sec = time(NULL) - (i == 1 ? 3600 : 0)},
                                         {.tv_sec = time(NULL) - (i == 1 ? 3600 : 0)}};
                assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
        }
        fill_entry(buf, len, 4, &ids[4]);
        assert_int_equal(cairn_cache_put(c, &ids[4], buf, (uint32_t)len), 0);
        assert_false(cairn_cache_contains(c, &ids[1]));
        assert_true(cairn_cache_contains(c, &ids[4]));
        cairn_cache_free(c);
}

static void test_limit_across_processes(void **state)
{
        struct fixture *f = *state;
        const size_t len = 30000;
        const uint64_t limit = 8 * cairn_cache_entry_bytes(len);
        pid_t pids[4];
        for (int p = 0; p < 4; p++) {
                pids[p] = fork();
                assert_true(pids[p] >= 0);
                if (pids[p] == 0) {
                        struct cairn_cache *c = NULL;
                        struct cairn_cache_options o = {.max_bytes = limit, .no_free_floor = true};
                        uint8_t *buf = malloc(len);
                        if (!buf || cairn_cache_open_with(f->cdir, &o, &c) < 0)
                                _exit(1);
                        for (unsigned i = 0; i < 40; i++) {
                                struct cairn_digest id;
                                fill_entry(buf, len, (unsigned)p * 1000 + i, &id);
                                /* A full cache may refuse an entry: allowed, not checked. */
                                (void)cairn_cache_put(c, &id, buf, (uint32_t)len);
                                if (cairn_cache_usage(c) > limit)
                                        _exit(2);
                        }
                        cairn_cache_free(c);
                        _exit(0);
                }
        }
        for (int p = 0; p < 4; p++) {
                int status;
                assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        uint64_t on_disk = chunks_on_disk(f->cdir);
        assert_true(on_disk <= limit);
        /* The shared counter agrees with what is on disk. */
        assert_int_equal(cairn_cache_usage(f->cache), on_disk);
}

static void test_prune_and_verify(void **state)
{
        struct fixture *f = *state;
        uint8_t buf[5000];
        struct cairn_digest ids[6];
        for (unsigned i = 0; i < 6; i++) {
                fill_entry(buf, sizeof(buf), 100 + i, &ids[i]);
                assert_int_equal(cairn_cache_put(f->cache, &ids[i], buf, sizeof(buf)), 0);
        }
        struct cairn_cache_stats st;
        assert_int_equal(cairn_cache_scan(f->cache, &st), 0);
        assert_int_equal(st.entries, 6);
        assert_int_equal(st.bytes, 6 * cairn_cache_entry_bytes(sizeof(buf)));
        assert_int_equal(st.accounted_bytes, st.bytes);

        /* Damage one entry so that only a full re-hash can tell: data and CRC agree. */
        char hex[65], path[1300];
        cairn_digest_to_hex(&ids[2], hex);
        snprintf(path, sizeof(path), "%s/chunks/%.2s/%s", f->cdir, hex, hex);
        uint8_t other[5000];
        struct cairn_digest unused;
        fill_entry(other, sizeof(other), 999, &unused);
        uint32_t crc = cairn_crc32c(0, other, sizeof(other));
        int fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        off_t crc_at = (off_t)cairn_cache_io_size(sizeof(other)) - 4;
        assert_int_equal(pwrite(fd, &crc, 4, crc_at), 4);
        assert_int_equal(pwrite(fd, other, sizeof(other), 0), (ssize_t)sizeof(other));
        close(fd);
        assert_int_equal(cairn_cache_verify(f->cache, NULL, NULL, &st), 0);
        assert_int_equal(st.checked, 6);
        assert_int_equal(st.damaged, 1);
        assert_false(cairn_cache_contains(f->cache, &ids[2]));
        assert_int_equal(cairn_cache_usage(f->cache), 5 * cairn_cache_entry_bytes(sizeof(buf)));

        /* Prune to two entries' worth: three of the five go, least recently used first. */
        assert_int_equal(
            cairn_cache_prune(f->cache, 2 * cairn_cache_entry_bytes(sizeof(buf)), &st), 0);
        assert_int_equal(st.evicted, 3);
        assert_int_equal(st.entries, 2);
        assert_int_equal(cairn_cache_usage(f->cache), 2 * cairn_cache_entry_bytes(sizeof(buf)));
        assert_int_equal(cairn_cache_prune(f->cache, 0, &st), 0);
        assert_int_equal(cairn_cache_usage(f->cache), 0);
        assert_int_equal(chunks_on_disk(f->cdir), 0);
}

static void test_counter_recovers_from_lost_usage_file(void **state)
{
        struct fixture *f = *state;
        uint8_t buf[3000];
        struct cairn_digest id;
        fill_entry(buf, sizeof(buf), 7, &id);
        assert_int_equal(cairn_cache_put(f->cache, &id, buf, sizeof(buf)), 0);
        cairn_cache_free(f->cache);
        char path[1300];
        snprintf(path, sizeof(path), "%s/usage", f->cdir);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(cairn_cache_open(f->cdir, &f->cache), 0);
        assert_int_equal(cairn_cache_usage(f->cache), cairn_cache_entry_bytes(sizeof(buf)));
}

static void test_put_batch(void **state)
{
        struct fixture *f = *state;
        enum { N = 12 };
        static uint8_t bufs[N][7000];
        struct cairn_digest ids[N];
        struct cairn_cache_item items[N];
        int results[N];
        for (unsigned i = 0; i < N; i++) {
                fill_entry(bufs[i], sizeof(bufs[i]), 500 + i, &ids[i]);
                items[i] = (struct cairn_cache_item){.id = &ids[i], .data = bufs[i],
                                                     .size = sizeof(bufs[i])};
        }
        /* One entry already there: the batch keeps it and counts it once. */
        assert_int_equal(cairn_cache_put(f->cache, &ids[3], bufs[3], sizeof(bufs[3])), 0);
        cairn_cache_put_batch(f->cache, items, N, results);
        for (unsigned i = 0; i < N; i++) {
                assert_int_equal(results[i], 0);
                uint8_t out[7000];
                assert_int_equal(cairn_cache_get(f->cache, &ids[i], out, sizeof(out)), 0);
                assert_memory_equal(out, bufs[i], sizeof(out));
        }
        assert_int_equal(cairn_cache_usage(f->cache), N * cairn_cache_entry_bytes(7000));
        assert_int_equal(chunks_on_disk(f->cdir), N * cairn_cache_entry_bytes(7000));
        /* Nothing left behind in tmp/. */
        char tmp[1300];
        snprintf(tmp, sizeof(tmp), "%s/tmp", f->cdir);
        DIR *d = opendir(tmp);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)))
                assert_true(de->d_name[0] == '.');
        closedir(d);
        /* Under a limit, a batch never takes the cache past it. */
        struct cairn_cache *c = NULL;
        struct cairn_cache_options o = {.max_bytes = 5 * cairn_cache_entry_bytes(7000) +
                                                     CAIRN_CACHE_FIXED_BYTES,
                                        .no_free_floor = true};
        char dir2[1300];
        snprintf(dir2, sizeof(dir2), "%s/limited", f->dir);
        assert_int_equal(cairn_cache_open_with(dir2, &o, &c), 0);
        cairn_cache_put_batch(c, items, N, results);
        assert_true(cairn_cache_usage(c) <= 5 * cairn_cache_entry_bytes(7000));
        assert_true(chunks_on_disk(dir2) <= 5 * cairn_cache_entry_bytes(7000));
        cairn_cache_free(c);
}

/* A manifest this process caches after opening counts against its limit at once. */
static void test_limit_counts_manifest_cached_later(void **state)
{
        struct fixture *f = *state;
        struct cairn_cache *c = NULL;
        const size_t len = 4000; /* one 4 KiB block each */
        const uint64_t manifest = 5000, manifest_bytes = 8192 + 4096;
        struct cairn_cache_options o = {.max_bytes = 4 * cairn_cache_entry_bytes(len) +
                                                     manifest_bytes + CAIRN_CACHE_FIXED_BYTES,
                                        .no_free_floor = true};
        uint8_t buf[4000];
        assert_int_equal(cairn_cache_open_with(f->cdir, &o, &c), 0);
        cairn_cache_count_manifest(c, manifest);
        for (unsigned i = 0; i < 8; i++) {
                struct cairn_digest id;
                fill_entry(buf, len, i, &id);
                assert_int_equal(cairn_cache_put(c, &id, buf, (uint32_t)len), 0);
                assert_true(cairn_cache_usage(c) <= 4 * cairn_cache_entry_bytes(len));
        }
        cairn_cache_free(c);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
            T(test_open_layout),
            T(test_round_trip),
            T(test_put_twice_and_many),
            T(test_miss),
            T(test_damaged_entries),
            T(test_v1_entry_is_damaged),
            T(test_buffer_paths),
            T(test_tmpfs),
            T(test_get_batch),
            T(test_wrong_size),
            T(test_tmp_invisible),
            T(test_manifest_path),
            T(test_concurrent),
            T(test_limit_holds),
            T(test_lru_evicts_least_recently_used),
            T(test_limit_counts_manifest_cached_later),
            T(test_limit_across_processes),
            T(test_prune_and_verify),
            T(test_counter_recovers_from_lost_usage_file),
            T(test_put_batch),
            cmocka_unit_test(test_default_dir_root),
            cmocka_unit_test(test_default_dir_non_root),
        };
        return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
