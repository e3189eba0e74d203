/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local directory store: opening (URLs, missing and non-store
 * directories), the on-disk layout, refs (round trip, nested names,
 * missing and malformed ref objects), blobs (ranges, short reads, sizes,
 * removal, copying out with a size cap) and blob writers (streaming
 * digest, idempotent commit, nothing left behind by an abandoned writer,
 * racing writers of the same content).  Every test works in its own
 * mkdtemp directory, removed afterwards.
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
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/digest.h"
#include "cairn/store.h"

struct fixture {
        char dir[1024];  /* the temp dir */
        char root[1100]; /* dir/store */
        struct cairn_store *store;
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
        snprintf(f->dir, sizeof(f->dir), "%s/cairn-test-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(f->dir)) {
                free(f);
                return -1;
        }
        snprintf(f->root, sizeof(f->root), "%s/store", f->dir);
        if (cairn_store_open(f->root, true, &f->store) < 0) {
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

static void path_in(const struct fixture *f, char *buf, size_t len, const char *rel)
{
        int n = snprintf(buf, len, "%s/%s", f->root, rel);
        assert_true(n > 0 && (size_t)n < len);
}

/* Number of entries in a directory, "." and ".." excluded; -1 if it cannot be read. */
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

static int count_in(const struct fixture *f, const char *rel)
{
        char p[PATH_MAX];
        path_in(f, p, sizeof(p), rel);
        return count_entries(p);
}

static bool is_dir(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void write_file(const char *path, const void *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        close(fd);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
        uint8_t *p = malloc(len ? len : 1);
        assert_non_null(p);
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t)x;
        }
        return p;
}

/* ---- opening ---- */

static void test_open_missing_and_non_store(void **state)
{
        struct fixture *f = *state;
        struct cairn_store *s = NULL;
        char p[PATH_MAX];

        snprintf(p, sizeof(p), "%s/nonexistent", f->dir);
        assert_int_equal(cairn_store_open(p, false, &s), -ENOENT);
        assert_null(s);
        assert_false(is_dir(p)); /* without create, nothing is made */

        /* A directory that is not a store. */
        snprintf(p, sizeof(p), "%s/plain", f->dir);
        assert_int_equal(mkdir(p, 0755), 0);
        assert_int_equal(cairn_store_open(p, false, &s), -ENOTDIR);
        assert_null(s);
        assert_int_equal(count_entries(p), 0);

        /* A regular file where the store should be. */
        snprintf(p, sizeof(p), "%s/afile", f->dir);
        write_file(p, "x", 1);
        assert_int_equal(cairn_store_open(p, false, &s), -ENOTDIR);
        assert_true(cairn_store_open(p, true, &s) < 0);
        assert_null(s);

        /* blobs/sha256 present as a file, not a directory. */
        snprintf(p, sizeof(p), "%s/fake", f->dir);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/fake/blobs", f->dir);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/fake/blobs/sha256", f->dir);
        write_file(p, "", 0);
        snprintf(p, sizeof(p), "%s/fake", f->dir);
        assert_int_equal(cairn_store_open(p, false, &s), -ENOTDIR);

        /* The empty URL. */
        assert_true(cairn_store_open("", false, &s) < 0);
        assert_null(s);
}

static void test_create_layout(void **state)
{
        struct fixture *f = *state;
        char p[PATH_MAX];
        static const char *const dirs[] = {"blobs", "blobs/sha256", "refs", "tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                path_in(f, p, sizeof(p), dirs[i]);
                assert_true(is_dir(p));
        }
        assert_int_equal(count_in(f, "blobs/sha256"), 0);
        assert_int_equal(count_in(f, "refs"), 0);
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_string_equal(cairn_store_url(f->store), f->root);

        /* Creating an existing store again is harmless; opening it without create works. */
        struct cairn_store *s = NULL;
        assert_int_equal(cairn_store_open(f->root, true, &s), 0);
        cairn_store_free(s);
        s = NULL;
        assert_int_equal(cairn_store_open(f->root, false, &s), 0);
        assert_non_null(s);
        cairn_store_free(s);
        cairn_store_free(NULL);

        /* create makes missing parents too. */
        snprintf(p, sizeof(p), "%s/deep/er/store", f->dir);
        s = NULL;
        assert_int_equal(cairn_store_open(p, true, &s), 0);
        cairn_store_free(s);
        snprintf(p, sizeof(p), "%s/deep/er/store/blobs/sha256", f->dir);
        assert_true(is_dir(p));
}

static void test_urls(void **state)
{
        struct fixture *f = *state;
        struct cairn_store *s = NULL;
        char url[PATH_MAX + 32];
        struct cairn_digest d, got;

        cairn_sha256("url", 3, &d);
        assert_int_equal(cairn_store_write_ref(f->store, "m", "v1", &d), 0);

        snprintf(url, sizeof(url), "file://%s", f->root);
        assert_int_equal(cairn_store_open(url, false, &s), 0);
        assert_string_equal(cairn_store_url(s), url);
        assert_int_equal(cairn_store_read_ref(s, "m", "v1", &got), 0);
        assert_true(cairn_digest_equal(&d, &got));
        cairn_store_free(s);

        snprintf(url, sizeof(url), "file://localhost%s", f->root);
        s = NULL;
        assert_int_equal(cairn_store_open(url, false, &s), 0);
        assert_int_equal(cairn_store_read_ref(s, "m", "v1", &got), 0);
        cairn_store_free(s);

        /*
         * Relative file URLs are refused, also with create: run from inside
         * the temp dir and check that nothing was made there.
         */
        char cwd[PATH_MAX];
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(f->dir), 0);
        int before = count_entries(".");
        s = NULL;
        assert_true(cairn_store_open("file://relative", true, &s) < 0);
        assert_true(cairn_store_open("file://relative/store", true, &s) < 0);
        assert_true(cairn_store_open("file://", true, &s) < 0);
        assert_true(cairn_store_open("ftp://x", true, &s) < 0);
        assert_true(cairn_store_open("ftp://x/abs", false, &s) < 0);
        assert_true(cairn_store_open("gopher:///abs", false, &s) < 0);
        assert_int_equal(count_entries("."), before);
        assert_int_equal(chdir(cwd), 0);
        assert_null(s);
}

/* ---- refs ---- */

static void test_ref_round_trip(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest a, b, got;
        cairn_sha256("a", 1, &a);
        cairn_sha256("b", 1, &b);

        assert_int_equal(cairn_store_write_ref(f->store, "model", "v1", &a), 0);
        assert_int_equal(cairn_store_write_ref(f->store, "org/model", "v1", &b), 0);
        assert_int_equal(cairn_store_write_ref(f->store, "org/team/model", "latest", &a), 0);

        assert_int_equal(cairn_store_read_ref(f->store, "model", "v1", &got), 0);
        assert_true(cairn_digest_equal(&got, &a));
        assert_int_equal(cairn_store_read_ref(f->store, "org/model", "v1", &got), 0);
        assert_true(cairn_digest_equal(&got, &b));
        assert_int_equal(cairn_store_read_ref(f->store, "org/team/model", "latest", &got), 0);
        assert_true(cairn_digest_equal(&got, &a));

        /* The documented on-disk form: refs/<name>/<tag> holding "sha256:<hex>\n". */
        char p[PATH_MAX], want[CAIRN_DIGEST_STR_SIZE + 1], text[200] = "";
        path_in(f, p, sizeof(p), "refs/org/model/v1");
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        assert_true(n > 0);
        cairn_digest_to_string(&b, want);
        strcat(want, "\n");
        assert_string_equal(text, want);

        /* Overwriting replaces the ref and leaves no temporaries. */
        assert_int_equal(cairn_store_write_ref(f->store, "org/model", "v1", &a), 0);
        assert_int_equal(cairn_store_read_ref(f->store, "org/model", "v1", &got), 0);
        assert_true(cairn_digest_equal(&got, &a));
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_int_equal(count_in(f, "refs/org/model"), 1);
}

static void test_ref_missing(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest d, got, before;
        cairn_sha256("x", 1, &d);
        memset(&got, 0x11, sizeof(got));
        before = got;
        assert_int_equal(cairn_store_read_ref(f->store, "model", "v1", &got), -ENOENT);
        assert_int_equal(cairn_store_write_ref(f->store, "model", "v1", &d), 0);
        assert_int_equal(cairn_store_read_ref(f->store, "model", "v2", &got), -ENOENT);
        assert_int_equal(cairn_store_read_ref(f->store, "other", "v1", &got), -ENOENT);
        assert_int_equal(cairn_store_read_ref(f->store, "model/sub", "v1", &got), -ENOENT);
        assert_memory_equal(&got, &before, sizeof(got));
}

static void test_ref_invalid_names(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest d, got;
        cairn_sha256("x", 1, &d);
        static const char *const names[] = {"", "../x", "a/../b", "/abs", "A", "a/", ".a"};
        static const char *const tags[] = {"", ".", "..", "a/b", "a b"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                assert_int_equal(cairn_store_write_ref(f->store, names[i], "v1", &d), -EINVAL);
                assert_int_equal(cairn_store_read_ref(f->store, names[i], "v1", &got), -EINVAL);
        }
        for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
                assert_int_equal(cairn_store_write_ref(f->store, "model", tags[i], &d), -EINVAL);
                assert_int_equal(cairn_store_read_ref(f->store, "model", tags[i], &got), -EINVAL);
        }
        assert_int_equal(count_in(f, "refs"), 0);
        assert_int_equal(count_in(f, "tmp"), 0);
}

static void expect_malformed_ref(struct fixture *f, const void *content, size_t len)
{
        char p[PATH_MAX];
        struct cairn_digest got, before;
        path_in(f, p, sizeof(p), "refs/model/bad");
        write_file(p, content, len);
        memset(&got, 0x22, sizeof(got));
        before = got;
        int r = cairn_store_read_ref(f->store, "model", "bad", &got);
        if (r != -EINVAL)
                fail_msg("ref content '%.*s' (%zu bytes): got %d, want -EINVAL", (int)len,
                         (const char *)content, len, r);
        assert_memory_equal(&got, &before, sizeof(got));
}

static void test_ref_malformed(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest d, got;
        char good[CAIRN_DIGEST_STR_SIZE], buf[512];
        cairn_sha256("x", 1, &d);
        cairn_digest_to_string(&d, good);
        assert_int_equal(cairn_store_write_ref(f->store, "model", "v1", &d), 0);

        expect_malformed_ref(f, "", 0);
        expect_malformed_ref(f, "\n", 1);
        expect_malformed_ref(f, good + 7, 64);           /* no prefix */
        expect_malformed_ref(f, good, strlen(good) - 1); /* 63 hex */
        snprintf(buf, sizeof(buf), "%s0\n", good);       /* 65 hex */
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "%s\n\n", good);
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), " %s\n", good);
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "%s \n", good);
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "%s\r\n", good);
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "sha512:%s\n", good + 7);
        expect_malformed_ref(f, buf, strlen(buf));
        snprintf(buf, sizeof(buf), "%s\n%s\n", good, good);
        expect_malformed_ref(f, buf, strlen(buf));
        memcpy(buf, good, sizeof(good)); /* the digest, then a NUL, then junk */
        memcpy(buf + sizeof(good), "junk\n", 5);
        expect_malformed_ref(f, buf, sizeof(good) + 5);
        /* A huge ref file: the reader's cap must not turn it into a valid prefix. */
        memset(buf, 'a', sizeof(buf));
        memcpy(buf, good, strlen(good));
        expect_malformed_ref(f, buf, sizeof(buf));

        /* With exactly the documented text and without the final newline, it parses. */
        char p[PATH_MAX];
        path_in(f, p, sizeof(p), "refs/model/bad");
        write_file(p, good, strlen(good));
        assert_int_equal(cairn_store_read_ref(f->store, "model", "bad", &got), 0);
        assert_true(cairn_digest_equal(&got, &d));

        /* A symlink as a ref object is refused, not followed. */
        char link[PATH_MAX];
        path_in(f, link, sizeof(link), "refs/model/link");
        path_in(f, p, sizeof(p), "refs/model/v1");
        assert_int_equal(symlink(p, link), 0);
        assert_int_equal(cairn_store_read_ref(f->store, "model", "link", &got), -EINVAL);
}

/* ---- blobs ---- */

static void test_put_and_read_ranges(void **state)
{
        struct fixture *f = *state;
        size_t len = 100000;
        uint8_t *data = pattern(len, 1), *buf = malloc(len + 10);
        struct cairn_digest d, want;
        bool created = false;
        uint64_t size = 0;
        assert_non_null(buf);

        assert_int_equal(cairn_store_put_blob(f->store, data, len, &d, &created), 0);
        assert_true(created);
        cairn_sha256(data, len, &want);
        assert_true(cairn_digest_equal(&d, &want));
        assert_int_equal(cairn_store_blob_size(f->store, &d, &size), 0);
        assert_int_equal(size, len);

        /* The blob lives at blobs/sha256/<hex>, byte for byte. */
        char hex[CAIRN_DIGEST_HEX_LEN + 1], rel[128], p[PATH_MAX];
        cairn_digest_to_hex(&d, hex);
        snprintf(rel, sizeof(rel), "blobs/sha256/%s", hex);
        path_in(f, p, sizeof(p), rel);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_size, (off_t)len);

        static const struct {
                uint64_t off;
                size_t len;
        } ranges[] = {{0, 100000}, {0, 1},     {99999, 1},  {12345, 6789},
                      {65535, 2},  {50000, 0}, {100000, 0}, {1, 99999}};
        for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
                memset(buf, 0xee, len);
                assert_int_equal(
                    cairn_store_read_blob(f->store, &d, ranges[i].off, ranges[i].len, buf), 0);
                assert_memory_equal(buf, data + ranges[i].off, ranges[i].len);
        }
        /* Past the end: -EIO, never a silent short read. */
        assert_int_equal(cairn_store_read_blob(f->store, &d, 99999, 2, buf), -EIO);
        assert_int_equal(cairn_store_read_blob(f->store, &d, 0, len + 1, buf), -EIO);
        assert_int_equal(cairn_store_read_blob(f->store, &d, 100000, 1, buf), -EIO);
        assert_int_equal(cairn_store_read_blob(f->store, &d, 1u << 30, 1, buf), -EIO);
        assert_true(cairn_store_read_blob(f->store, &d, UINT64_MAX - 1, 8, buf) < 0);

        /* The local fd shows the same bytes. */
        int fd = -1;
        assert_int_equal(cairn_store_open_blob_fd(f->store, &d, &fd), 0);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, buf, len + 10, 0), (ssize_t)len);
        assert_memory_equal(buf, data, len);
        close(fd);

        /* Missing blobs. */
        struct cairn_digest missing;
        cairn_sha256("missing", 7, &missing);
        size = 777;
        assert_int_equal(cairn_store_blob_size(f->store, &missing, &size), -ENOENT);
        assert_int_equal(size, 777);
        assert_int_equal(cairn_store_read_blob(f->store, &missing, 0, 1, buf), -ENOENT);
        fd = -1;
        assert_int_equal(cairn_store_open_blob_fd(f->store, &missing, &fd), -ENOENT);
        assert_int_equal(fd, -1);

        free(data);
        free(buf);
}

static uint64_t splitmix(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* Scatter buffers with guard bytes on each side, so that a write past one is seen. */
#define GUARD 16

static void iov_alloc(struct iovec *iov, uint8_t **mem, const size_t *lens, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                mem[i] = malloc(lens[i] + 2 * GUARD);
                assert_non_null(mem[i]);
                memset(mem[i], 0x5a, lens[i] + 2 * GUARD);
                iov[i] = (struct iovec){.iov_base = mem[i] + GUARD, .iov_len = lens[i]};
        }
}

/* The buffers hold data from off on, in order, and nothing around them changed. */
static void iov_check(const struct iovec *iov, uint8_t **mem, unsigned n, const uint8_t *data,
                      uint64_t off)
{
        for (unsigned i = 0; i < n; i++) {
                size_t len = iov[i].iov_len;
                for (size_t g = 0; g < GUARD; g++) {
                        assert_int_equal(mem[i][g], 0x5a);
                        assert_int_equal(mem[i][GUARD + len + g], 0x5a);
                }
                assert_memory_equal(iov[i].iov_base, data + off, len);
                off += len;
        }
}

static void iov_release(uint8_t **mem, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                free(mem[i]);
}

static void test_read_blob_iov(void **state)
{
        struct fixture *f = *state;
        const size_t len = 2 * 1024 * 1024 + 5;
        uint8_t *data = malloc(len);
        struct iovec *iov = calloc(CAIRN_STORE_IOV_MAX + 1, sizeof(*iov));
        uint8_t **mem = calloc(CAIRN_STORE_IOV_MAX, sizeof(*mem));
        size_t *lens = calloc(CAIRN_STORE_IOV_MAX, sizeof(*lens));
        struct cairn_digest d;
        uint64_t st = 99;
        assert_non_null(data);
        assert_non_null(iov);
        assert_non_null(mem);
        assert_non_null(lens);
        for (size_t i = 0; i < len; i++)
                data[i] = (uint8_t)(splitmix(&st) >> 56);
        assert_int_equal(cairn_store_put_blob(f->store, data, len, &d, NULL), 0);

        /* Odd sizes, empty ones among them, from an odd offset. */
        static const size_t odd[] = {1, 4095, 0, 1024 * 1024 + 3, 7, 0, 1};
        unsigned n = sizeof(odd) / sizeof(odd[0]);
        iov_alloc(iov, mem, odd, n);
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 333, iov, n, 0), 0);
        iov_check(iov, mem, n, data, 333);
        /* Up to the last byte of the blob, and one past it: a short blob. */
        uint64_t total = 1 + 4095 + 1024 * 1024 + 3 + 7 + 1;
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, len - total, iov, n, 0), 0);
        iov_check(iov, mem, n, data, len - total);
        assert_int_equal(
            cairn_store_read_blob_iov_until(f->store, &d, len - total + 1, iov, n, 0), -EIO);
        iov_release(mem, n);

        /* As many buffers as a call takes (more than one preadv() window), sizes 0 to 2000. */
        for (unsigned i = 0; i < CAIRN_STORE_IOV_MAX; i++)
                lens[i] = (size_t)(splitmix(&st) % 2001);
        iov_alloc(iov, mem, lens, CAIRN_STORE_IOV_MAX);
        assert_int_equal(
            cairn_store_read_blob_iov_until(f->store, &d, 17, iov, CAIRN_STORE_IOV_MAX, 0), 0);
        iov_check(iov, mem, CAIRN_STORE_IOV_MAX, data, 17);
        iov_release(mem, CAIRN_STORE_IOV_MAX);

        /* Refused lists: none, too many, no array, a NULL buffer with room, overflows. */
        uint8_t a[8], b[8];
        for (unsigned i = 0; i <= CAIRN_STORE_IOV_MAX; i++)
                iov[i] = (struct iovec){.iov_base = a, .iov_len = 0};
        iov[0].iov_len = sizeof(a);
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 0, iov, 0, 0), -EINVAL);
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 0, iov,
                                                         CAIRN_STORE_IOV_MAX + 1, 0),
                         -EINVAL);
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 0, NULL, 1, 0), -EINVAL);
        iov[1] = (struct iovec){.iov_base = NULL, .iov_len = 1};
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 0, iov, 2, 0), -EINVAL);
        iov[1] = (struct iovec){.iov_base = b, .iov_len = SIZE_MAX};
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 0, iov, 2, 0), -EINVAL);
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, UINT64_MAX - 4, iov, 1, 0),
                         -EINVAL);
        /* A NULL buffer of no length is nothing to fill. */
        iov[1] = (struct iovec){.iov_base = NULL, .iov_len = 0};
        iov[2] = (struct iovec){.iov_base = b, .iov_len = sizeof(b)};
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, 5, iov, 3, 0), 0);
        assert_memory_equal(a, data + 5, sizeof(a));
        assert_memory_equal(b, data + 5 + sizeof(a), sizeof(b));
        /* A zero total reads nothing, like a flat read of 0 bytes; a missing blob is -ENOENT. */
        iov[0].iov_len = 0;
        iov[2].iov_len = 0;
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &d, len, iov, 3, 0), 0);
        struct cairn_digest missing;
        cairn_sha256("missing", 7, &missing);
        iov[0].iov_len = 1;
        assert_int_equal(cairn_store_read_blob_iov_until(f->store, &missing, 0, iov, 1, 0),
                         -ENOENT);
        free(lens);
        free(mem);
        free(iov);
        free(data);
}

static void test_empty_blob(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest d, want;
        bool created = false;
        uint64_t size = 1;
        assert_int_equal(cairn_store_put_blob(f->store, "", 0, &d, &created), 0);
        assert_true(created);
        cairn_sha256("", 0, &want);
        assert_true(cairn_digest_equal(&d, &want));
        assert_int_equal(cairn_store_blob_size(f->store, &d, &size), 0);
        assert_int_equal(size, 0);
        uint8_t b;
        assert_int_equal(cairn_store_read_blob(f->store, &d, 0, 0, &b), 0);
        assert_int_equal(cairn_store_read_blob(f->store, &d, 0, 1, &b), -EIO);
}

static void test_writer_streaming(void **state)
{
        struct fixture *f = *state;
        size_t len = 3 * 1024 * 1024 + 17;
        uint8_t *data = pattern(len, 2);
        struct cairn_blob_writer *w = NULL;
        struct cairn_digest d, want;
        bool created = false;

        assert_int_equal(cairn_store_blob_writer_new(f->store, &w), 0);
        assert_non_null(w);
        assert_int_equal(cairn_blob_writer_size(w), 0);
        /* While it streams, the upload sits in tmp/, not in blobs/. */
        size_t off = 0, piece = 1;
        while (off < len) {
                size_t n = piece < len - off ? piece : len - off;
                assert_int_equal(cairn_blob_writer_write(w, data + off, n), 0);
                off += n;
                assert_int_equal(cairn_blob_writer_size(w), off);
                piece = piece * 3 + 1;
        }
        assert_int_equal(cairn_blob_writer_write(w, data, 0), 0);
        assert_int_equal(count_in(f, "tmp"), 1);
        assert_int_equal(count_in(f, "blobs/sha256"), 0);

        assert_int_equal(cairn_blob_writer_commit(w, &d, &created), 0);
        assert_true(created);
        cairn_blob_writer_free(w);
        cairn_sha256(data, len, &want);
        assert_true(cairn_digest_equal(&d, &want));
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_int_equal(count_in(f, "blobs/sha256"), 1);

        uint8_t *back = malloc(len);
        assert_non_null(back);
        assert_int_equal(cairn_store_read_blob(f->store, &d, 0, len, back), 0);
        assert_memory_equal(back, data, len);

        /* Identical content again: kept, reported as not created, temp removed. */
        w = NULL;
        struct cairn_digest d2;
        assert_int_equal(cairn_store_blob_writer_new(f->store, &w), 0);
        assert_int_equal(cairn_blob_writer_write(w, data, len / 2), 0);
        assert_int_equal(cairn_blob_writer_write(w, data + len / 2, len - len / 2), 0);
        created = true;
        assert_int_equal(cairn_blob_writer_commit(w, &d2, &created), 0);
        assert_false(created);
        assert_true(cairn_digest_equal(&d, &d2));
        cairn_blob_writer_free(w);
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_int_equal(count_in(f, "blobs/sha256"), 1);

        /* put_blob of the same bytes agrees; ret_created may be NULL. */
        created = true;
        assert_int_equal(cairn_store_put_blob(f->store, data, len, &d2, &created), 0);
        assert_false(created);
        assert_int_equal(cairn_store_put_blob(f->store, data, len, &d2, NULL), 0);
        assert_true(cairn_digest_equal(&d, &d2));

        free(back);
        free(data);
}

static void test_writer_abandoned(void **state)
{
        struct fixture *f = *state;
        uint8_t *data = pattern(50000, 3);
        struct cairn_blob_writer *w = NULL;

        assert_int_equal(cairn_store_blob_writer_new(f->store, &w), 0);
        assert_int_equal(cairn_blob_writer_write(w, data, 50000), 0);
        assert_int_equal(count_in(f, "tmp"), 1);
        cairn_blob_writer_free(w);
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_int_equal(count_in(f, "blobs/sha256"), 0);

        /* An empty abandoned writer, and several at once. */
        struct cairn_blob_writer *ws[5] = {NULL};
        for (int i = 0; i < 5; i++) {
                assert_int_equal(cairn_store_blob_writer_new(f->store, &ws[i]), 0);
                if (i % 2)
                        assert_int_equal(cairn_blob_writer_write(ws[i], data, 100 * (size_t)i), 0);
        }
        assert_int_equal(count_in(f, "tmp"), 5);
        for (int i = 0; i < 5; i++)
                cairn_blob_writer_free(ws[i]);
        cairn_blob_writer_free(NULL);
        assert_int_equal(count_in(f, "tmp"), 0);
        assert_int_equal(count_in(f, "blobs/sha256"), 0);
        free(data);
}

static void test_remove_blob(void **state)
{
        struct fixture *f = *state;
        struct cairn_digest a, b;
        uint64_t size;
        assert_int_equal(cairn_store_put_blob(f->store, "first", 5, &a, NULL), 0);
        assert_int_equal(cairn_store_put_blob(f->store, "second", 6, &b, NULL), 0);
        assert_int_equal(count_in(f, "blobs/sha256"), 2);
        assert_int_equal(cairn_store_remove_blob(f->store, &a), 0);
        assert_int_equal(cairn_store_blob_size(f->store, &a, &size), -ENOENT);
        assert_int_equal(cairn_store_remove_blob(f->store, &a), -ENOENT);
        assert_int_equal(cairn_store_blob_size(f->store, &b, &size), 0);
        assert_int_equal(size, 6);
        assert_int_equal(count_in(f, "blobs/sha256"), 1);
        /* It can be stored again afterwards, and is then new. */
        bool created = false;
        assert_int_equal(cairn_store_put_blob(f->store, "first", 5, &a, &created), 0);
        assert_true(created);
}

static void test_copy_blob_to_fd(void **state)
{
        struct fixture *f = *state;
        size_t len = 200000;
        uint8_t *data = pattern(len, 4);
        struct cairn_digest d;
        uint64_t size = 0;
        char p[PATH_MAX];
        assert_int_equal(cairn_store_put_blob(f->store, data, len, &d, NULL), 0);

        snprintf(p, sizeof(p), "%s/copy", f->dir);
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);

        /* Too large for the cap: -EFBIG and nothing written. */
        size = 4242;
        assert_int_equal(cairn_store_copy_blob_to_fd(f->store, &d, fd, len - 1, &size), -EFBIG);
        assert_int_equal(size, 4242);
        assert_int_equal(cairn_store_copy_blob_to_fd(f->store, &d, fd, 0, &size), -EFBIG);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(st.st_size, 0);

        /* From the fd's current position: a prefix already there stays. */
        assert_int_equal(write(fd, "HEAD", 4), 4);
        assert_int_equal(cairn_store_copy_blob_to_fd(f->store, &d, fd, len, &size), 0);
        assert_int_equal(size, len);
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(st.st_size, (off_t)len + 4);
        uint8_t *back = malloc(len + 4);
        assert_non_null(back);
        assert_int_equal(pread(fd, back, len + 4, 0), (ssize_t)len + 4);
        assert_memory_equal(back, "HEAD", 4);
        assert_memory_equal(back + 4, data, len);
        close(fd);

        struct cairn_digest missing;
        cairn_sha256("missing", 7, &missing);
        fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(cairn_store_copy_blob_to_fd(f->store, &missing, fd, len, &size), -ENOENT);
        close(fd);
        free(back);
        free(data);
}

/* ---- concurrency ---- */

struct racer {
        struct cairn_store *store;
        const uint8_t *shared;
        size_t shared_len;
        unsigned id;
        struct cairn_digest shared_digest, own_digest;
        bool created;
        int r;
};

static void *racer_main(void *arg)
{
        struct racer *rc = arg;
        uint8_t own[64];
        memset(own, (int)rc->id, sizeof(own));
        rc->r = cairn_store_put_blob(rc->store, rc->shared, rc->shared_len, &rc->shared_digest,
                                     &rc->created);
        if (rc->r >= 0)
                rc->r = cairn_store_put_blob(rc->store, own, sizeof(own), &rc->own_digest, NULL);
        return NULL;
}

/* Writers racing on identical content: all succeed, exactly one created it. */
static void test_concurrent_writers(void **state)
{
        struct fixture *f = *state;
        enum { N = 8 };
        size_t len = 1 << 20;
        uint8_t *data = pattern(len, 5);
        struct racer rc[N];
        pthread_t th[N];
        for (unsigned i = 0; i < N; i++) {
                rc[i] =
                    (struct racer){.store = f->store, .shared = data, .shared_len = len, .id = i};
                assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rc[i]), 0);
        }
        unsigned creators = 0;
        for (unsigned i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                assert_int_equal(rc[i].r, 0);
                assert_true(cairn_digest_equal(&rc[i].shared_digest, &rc[0].shared_digest));
                creators += rc[i].created;
        }
        assert_int_equal(creators, 1);
        assert_int_equal(count_in(f, "blobs/sha256"), N + 1);
        assert_int_equal(count_in(f, "tmp"), 0);
        uint8_t *back = malloc(len);
        assert_non_null(back);
        assert_int_equal(cairn_store_read_blob(f->store, &rc[0].shared_digest, 0, len, back), 0);
        assert_memory_equal(back, data, len);
        free(back);
        free(data);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
            T(test_open_missing_and_non_store),
            T(test_create_layout),
            T(test_urls),
            T(test_ref_round_trip),
            T(test_ref_missing),
            T(test_ref_invalid_names),
            T(test_ref_malformed),
            T(test_put_and_read_ranges),
            T(test_empty_blob),
            T(test_read_blob_iov),
            T(test_writer_streaming),
            T(test_writer_abandoned),
            T(test_remove_blob),
            T(test_copy_blob_to_fd),
            T(test_concurrent_writers),
        };
        return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
