/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The http(s):// store against a real static server: a source tree is
 * built (cairn_build) into a local directory store, nginx serves that
 * directory on a free loopback port, and everything read through the
 * http store is compared with the local store and the source: refs
 * (unknown ones are -ENOENT), blob sizes, ranges of every blob, whole
 * blobs streamed into an fd (with a cap), and every file of the volume
 * opened and read through the http store.  Writes are refused (-EROFS)
 * and URLs with credentials, queries or no host are rejected without
 * echoing them.
 *
 * nginx is a test dependency (scripts/deps.sh installs it); without it
 * this test fails and says so.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/builder.h"
#include "cairn/fetch.h"
#include "cairn/manifest.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"

#define KiB       1024u
#define MiB       (1024u * 1024u)
#define VOL_NAME  "models/test.vol_1"
#define VOL_TAG   "v1.0_rc-1"
#define MAX_BLOBS 64

static const struct cairn_chunker_params params = {4 * KiB, 16 * KiB, 64 * KiB};

struct src_file {
        const char *path;
        size_t size;
        bool text;
};

static const struct src_file src_files[] = {
    {"empty", 0, false},
    {"one", 1, false},
    {"small.txt", 5000, true},
    {"sp ace \xc3\xa9.bin", 70000, false},
    {"dir/sub/weights.bin", 3 * MiB + 7, false},
    {"dir/text.txt", 1 * MiB, true},
    {"dir/max", 64 * KiB, false},
};
#define NFILES (sizeof(src_files) / sizeof(src_files[0]))

struct world {
        char dir[1024];
        char www[1100];
        char store_dir[1200];
        struct cairn_store *local;
        struct cairn_digest manifest;
        uint8_t *data[NFILES];
        struct cairn_digest blobs[MAX_BLOBS];
        uint64_t blob_sizes[MAX_BLOBS];
        unsigned nblobs;
        pid_t nginx;
        uint16_t port;
        char url[256];
};

static uint64_t splitmix64(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static void fill(uint8_t *buf, size_t len, uint64_t seed, bool text)
{
        static const char *const words[] = {"tensor ", "weight ", "layer ", "bias ", "norm\n"};
        uint64_t st = seed;
        size_t off = 0;
        if (!text) {
                for (size_t i = 0; i < len; i++)
                        buf[i] = (uint8_t)splitmix64(&st);
                return;
        }
        while (off < len) {
                const char *w = words[splitmix64(&st) % 5];
                size_t n = strlen(w) < len - off ? strlen(w) : len - off;
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

static int write_file(const char *path, const void *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
        return close(fd);
}

static const char *find_nginx(void)
{
        static const char *const candidates[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx",
                                                 "/usr/bin/nginx", "/usr/local/nginx/sbin/nginx"};
        for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
                if (access(candidates[i], X_OK) == 0)
                        return candidates[i];
        return NULL;
}

static uint16_t free_port(void)
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return 0;
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
                close(s);
                return 0;
        }
        close(s);
        return ntohs(a.sin_port);
}

static bool port_answers(uint16_t port)
{
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons(port)};
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return false;
        bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(s);
        return ok;
}

/* Starts nginx on a free port serving w->www; retried, since the port may be taken meanwhile. */
static int nginx_start(struct world *w)
{
        const char *nginx = find_nginx();
        char conf[1300], errlog[1300], path[1400];
        if (!nginx) {
                fprintf(stderr, "test_store_http: nginx not found: install it (scripts/deps.sh "
                                "installs the Debian package 'nginx')\n");
                return -1;
        }
        snprintf(conf, sizeof(conf), "%s/nginx.conf", w->dir);
        snprintf(errlog, sizeof(errlog), "%s/nginx-error.log", w->dir);
        snprintf(path, sizeof(path), "%s/nginx-tmp", w->dir);
        if (mkdir(path, 0755) < 0)
                return -1;
        for (int attempt = 0; attempt < 5; attempt++) {
                w->port = free_port();
                FILE *f = fopen(conf, "w");
                if (!w->port || !f)
                        return -1;
                fprintf(f,
                        "daemon off;\n"
                        "worker_processes 1;\n"
                        "pid %s/nginx.pid;\n"
                        "error_log %s warn;\n"
                        "events { worker_connections 256; }\n"
                        "http {\n"
                        "  access_log off;\n"
                        "  client_body_temp_path %s/body;\n"
                        "  proxy_temp_path %s/proxy;\n"
                        "  fastcgi_temp_path %s/fastcgi;\n"
                        "  uwsgi_temp_path %s/uwsgi;\n"
                        "  scgi_temp_path %s/scgi;\n"
                        "  default_type application/octet-stream;\n"
                        "  server {\n"
                        "    listen 127.0.0.1:%u;\n"
                        "    root %s;\n"
                        "  }\n"
                        "}\n",
                        w->dir, errlog, path, path, path, path, path, w->port, w->www);
                fclose(f);
                pid_t pid = fork();
                if (pid < 0)
                        return -1;
                if (pid == 0) {
                        int fd = open(errlog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                        if (fd >= 0) {
                                dup2(fd, 1);
                                dup2(fd, 2);
                        }
                        execl(nginx, "nginx", "-c", conf, "-p", w->dir, "-e", errlog, (char *)NULL);
                        _exit(127);
                }
                for (int i = 0; i < 100; i++) {
                        int status;
                        if (waitpid(pid, &status, WNOHANG) == pid)
                                break; /* exited: port taken or bad config; retry */
                        if (port_answers(w->port)) {
                                w->nginx = pid;
                                snprintf(w->url, sizeof(w->url), "http://127.0.0.1:%u/store/",
                                         w->port);
                                return 0;
                        }
                        usleep(50 * 1000);
                }
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        fprintf(stderr, "test_store_http: nginx did not start, see %s\n", errlog);
        return -1;
}

static void nginx_stop(struct world *w)
{
        if (w->nginx <= 0)
                return;
        kill(w->nginx, SIGTERM);
        waitpid(w->nginx, NULL, 0);
        w->nginx = 0;
}

static int list_blobs(struct world *w)
{
        char p[1400];
        snprintf(p, sizeof(p), "%s/blobs/sha256", w->store_dir);
        DIR *d = opendir(p);
        if (!d)
                return -1;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (w->nblobs >= MAX_BLOBS ||
                    cairn_digest_from_hex(de->d_name, strlen(de->d_name), &w->blobs[w->nblobs]) <
                        0 ||
                    cairn_store_blob_size(w->local, &w->blobs[w->nblobs],
                                          &w->blob_sizes[w->nblobs]) < 0) {
                        closedir(d);
                        return -1;
                }
                w->nblobs++;
        }
        closedir(d);
        return w->nblobs >= 2 ? 0 : -1; /* at least a pack and the manifest */
}

static int world_setup(void **state)
{
        struct world *w = calloc(1, sizeof(*w));
        char p[2048], err[512] = "";
        if (!w)
                return -1;
        const char *tmp = getenv("TMPDIR");
        snprintf(w->dir, sizeof(w->dir), "%s/cairn-test-store-http-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(w->dir))
                goto fail;
        /* nginx workers may run as another user: the served tree must be world-readable. */
        if (chmod(w->dir, 0755) < 0)
                goto fail;
        snprintf(w->www, sizeof(w->www), "%s/www", w->dir);
        snprintf(w->store_dir, sizeof(w->store_dir), "%s/store", w->www);
        static const char *const dirs[] = {"/src", "/src/dir", "/src/dir/sub", "/www"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                snprintf(p, sizeof(p), "%s%s", w->dir, dirs[i]);
                if (mkdir(p, 0755) < 0)
                        goto fail;
        }
        for (size_t i = 0; i < NFILES; i++) {
                w->data[i] = malloc(src_files[i].size ? src_files[i].size : 1);
                if (!w->data[i])
                        goto fail;
                fill(w->data[i], src_files[i].size, 500 + i, src_files[i].text);
                snprintf(p, sizeof(p), "%s/src/%s", w->dir, src_files[i].path);
                if (write_file(p, w->data[i], src_files[i].size) < 0)
                        goto fail;
        }
        if (cairn_store_open(w->store_dir, true, &w->local) < 0)
                goto fail;
        struct cairn_build_options o;
        struct cairn_build_result res;
        cairn_build_options_init(&o);
        snprintf(p, sizeof(p), "%s/src", w->dir);
        o.src_dir = p;
        o.store = w->local;
        o.name = VOL_NAME;
        o.tag = VOL_TAG;
        o.chunking = params;
        o.threads = 2;
        o.pack_max = 2 * MiB; /* several packs */
        if (cairn_build(&o, &res, err, sizeof(err)) < 0) {
                fprintf(stderr, "build failed: %s\n", err);
                goto fail;
        }
        w->manifest = res.manifest;
        if (list_blobs(w) < 0 || nginx_start(w) < 0)
                goto fail;
        *state = w;
        return 0;
fail:
        nginx_stop(w);
        cairn_store_free(w->local);
        if (w->dir[0])
                nftw(w->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        for (size_t i = 0; i < NFILES; i++)
                free(w->data[i]);
        free(w);
        return -1;
}

static int world_teardown(void **state)
{
        struct world *w = *state;
        nginx_stop(w);
        cairn_store_free(w->local);
        nftw(w->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        for (size_t i = 0; i < NFILES; i++)
                free(w->data[i]);
        free(w);
        return 0;
}

static struct cairn_store *open_http(struct world *w)
{
        struct cairn_store *s = NULL;
        char err[512] = "";
        int r = cairn_store_open_with(w->url, NULL, &s, err, sizeof(err));
        if (r < 0)
                fail_msg("cannot open '%s': %s (%s)", w->url, strerror(-r), err);
        return s;
}

/* ---- tests ---- */

static void test_open_and_refs(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        struct cairn_digest d;

        assert_true(cairn_store_is_remote(s));
        assert_false(cairn_store_is_remote(w->local));
        assert_string_equal(cairn_store_url(s), w->url);
        assert_int_equal(cairn_store_read_ref(s, VOL_NAME, VOL_TAG, &d), 0);
        assert_true(cairn_digest_equal(&d, &w->manifest));
        assert_int_equal(cairn_store_read_ref(s, VOL_NAME, "v2", &d), -ENOENT);
        assert_int_equal(cairn_store_read_ref(s, "models/other", VOL_TAG, &d), -ENOENT);
        assert_int_equal(cairn_store_read_ref(s, "models", "x", &d), -ENOENT);
        cairn_store_free(s);

        /* Without the trailing slash, the same store. */
        char url[256];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/store", w->port);
        assert_int_equal(cairn_store_open(url, false, &s), 0);
        assert_int_equal(cairn_store_read_ref(s, VOL_NAME, VOL_TAG, &d), 0);
        assert_true(cairn_digest_equal(&d, &w->manifest));
        cairn_store_free(s);
}

static void test_malformed_ref(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        struct cairn_digest d;
        char p[1400];
        static const char *const bad[] = {
            "sha256:xyz\n",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n",
            ("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nand "
             "then a much longer tail that no ref object has\n")};
        snprintf(p, sizeof(p), "%s/refs/models/bad", w->store_dir);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/refs/models/bad/t", w->store_dir);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(write_file(p, bad[i], strlen(bad[i])), 0);
                assert_int_equal(cairn_store_read_ref(s, "models/bad", "t", &d), -EINVAL);
        }
        static const char good[] =
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_int_equal(write_file(p, good, strlen(good)), 0);
        assert_int_equal(cairn_store_read_ref(s, "models/bad", "t", &d), 0);
        cairn_store_free(s);
}

static void test_blobs(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        uint8_t *got = malloc(4 * MiB), *want = malloc(4 * MiB);
        assert_non_null(got);
        assert_non_null(want);
        uint64_t st = 1;

        for (unsigned i = 0; i < w->nblobs; i++) {
                const struct cairn_digest *d = &w->blobs[i];
                uint64_t size = w->blob_sizes[i], hsize = 0;
                assert_true(size <= 4 * MiB);
                assert_int_equal(cairn_store_blob_size(s, d, &hsize), 0);
                assert_int_equal(hsize, size);
                assert_int_equal(cairn_store_read_blob(w->local, d, 0, size, want), 0);

                /* Whole, first byte, last byte, and random ranges. */
                uint64_t ranges[12][2] = {{0, size}, {0, 1}, {size - 1, 1}};
                for (int k = 3; k < 12; k++) {
                        uint64_t len = splitmix64(&st) % (size < 300 * KiB ? size : 300 * KiB) + 1;
                        ranges[k][0] = splitmix64(&st) % (size - len + 1);
                        ranges[k][1] = len;
                }
                for (int k = 0; k < 12; k++) {
                        memset(got, 0, ranges[k][1]);
                        assert_int_equal(
                            cairn_store_read_blob(s, d, ranges[k][0], (size_t)ranges[k][1], got),
                            0);
                        assert_memory_equal(got, want + ranges[k][0], ranges[k][1]);
                }
                /* Zero bytes is nothing to fetch; past the end is a short blob. */
                assert_int_equal(cairn_store_read_blob(s, d, size, 0, got), 0);
                assert_int_equal(cairn_store_read_blob(s, d, size, 1, got), -EIO);
                assert_int_equal(cairn_store_read_blob(s, d, size - 1, 2, got), -EIO);

                /* Whole blob into an fd, and the cap. */
                int fd = memfd_create("blob", MFD_CLOEXEC);
                uint64_t copied = 0;
                assert_true(fd >= 0);
                assert_int_equal(cairn_store_copy_blob_to_fd(s, d, fd, size, &copied), 0);
                assert_int_equal(copied, size);
                assert_int_equal(pread(fd, got, size + 1, 0), (ssize_t)size);
                assert_memory_equal(got, want, size);
                assert_int_equal(ftruncate(fd, 0), 0);
                assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
                assert_int_equal(cairn_store_copy_blob_to_fd(s, d, fd, size - 1, &copied), -EFBIG);
                assert_int_equal(cairn_store_copy_blob_to_fd(s, d, fd, 0, &copied), -EFBIG);
                close(fd);

                /* A deadline already past fails at once. */
                assert_int_equal(
                    cairn_store_read_blob_until(s, d, 0, 1, got, cairn_fetch_now_ns() - 1),
                    -ETIMEDOUT);
        }

        struct cairn_digest missing;
        uint64_t size;
        cairn_sha256("not stored", 10, &missing);
        assert_int_equal(cairn_store_blob_size(s, &missing, &size), -ENOENT);
        assert_int_equal(cairn_store_read_blob(s, &missing, 0, 10, got), -ENOENT);
        int fd = memfd_create("blob", MFD_CLOEXEC);
        assert_int_equal(cairn_store_copy_blob_to_fd(s, &missing, fd, 100, &size), -ENOENT);
        close(fd);
        free(got);
        free(want);
        cairn_store_free(s);
}

/*
 * Scatter reads of the largest blob: buffers of odd sizes (1 byte, 4095,
 * 1 MiB + 3 when the blob has room for it, empty ones), byte for byte
 * against the local store, the most buffers a call takes, a short blob,
 * a past deadline and refused lists.
 */
static void test_blobs_iov(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        unsigned big = 0;
        for (unsigned i = 1; i < w->nblobs; i++)
                if (w->blob_sizes[i] > w->blob_sizes[big])
                        big = i;
        const struct cairn_digest *d = &w->blobs[big];
        uint64_t size = w->blob_sizes[big];
        assert_true(size > 1 * MiB + 4096 + 100);
        uint8_t *want = malloc(size), *got = malloc(size + 16);
        struct iovec *iov = calloc(CAIRN_STORE_IOV_MAX + 1, sizeof(*iov));
        assert_non_null(want);
        assert_non_null(got);
        assert_non_null(iov);
        assert_int_equal(cairn_store_read_blob(w->local, d, 0, size, want), 0);

        /* The buffers are slices of one allocation with a gap after each, poisoned. */
        static const size_t odd[] = {1, 0, 4095, 1 * MiB + 3, 0, 7, 1};
        unsigned n = sizeof(odd) / sizeof(odd[0]);
        size_t total = 0, at = 0;
        memset(got, 0xee, size + 16);
        for (unsigned i = 0; i < n; i++) {
                iov[i] = (struct iovec){.iov_base = got + at, .iov_len = odd[i]};
                at += odd[i] + 1;
                total += odd[i];
        }
        uint64_t off = size - total - 17;
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, off, iov, n, 0), 0);
        at = 0;
        for (unsigned i = 0; i < n; i++) {
                assert_memory_equal(iov[i].iov_base, want + off, odd[i]);
                assert_int_equal(got[at + odd[i]], 0xee);
                off += odd[i];
                at += odd[i] + 1;
        }
        /* Ending on the last byte, then one byte past it. */
        off = size - total;
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, off, iov, n, 0), 0);
        assert_memory_equal(iov[3].iov_base, want + off + 1 + 4095, 1 * MiB + 3);
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, off + 1, iov, n, 0), -EIO);

        /* As many buffers as a call takes, of 0 to 600 bytes, consecutive in got. */
        uint64_t st = 3;
        at = 0;
        for (unsigned i = 0; i < CAIRN_STORE_IOV_MAX; i++) {
                size_t len = (size_t)(splitmix64(&st) % 601);
                iov[i] = (struct iovec){.iov_base = got + at, .iov_len = len};
                at += len;
        }
        assert_true(at + 5 <= size);
        memset(got, 0, at);
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, 5, iov, CAIRN_STORE_IOV_MAX, 0),
                         0);
        assert_memory_equal(got, want + 5, at);
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, 5, iov, CAIRN_STORE_IOV_MAX + 1, 0),
                         -EINVAL);
        assert_int_equal(cairn_store_read_blob_iov_until(s, d, 5, iov, 0, 0), -EINVAL);
        /* A deadline already past fails at once. */
        assert_int_equal(
            cairn_store_read_blob_iov_until(s, d, 0, iov, 2, cairn_fetch_now_ns() - 1),
            -ETIMEDOUT);
        free(iov);
        free(got);
        free(want);
        cairn_store_free(s);
}

static void test_read_only(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        struct cairn_blob_writer *bw = NULL;
        struct cairn_digest d;
        int fd = -1;
        assert_int_equal(cairn_store_write_ref(s, VOL_NAME, "v9", &w->manifest), -EROFS);
        assert_int_equal(cairn_store_blob_writer_new(s, &bw), -EROFS);
        assert_null(bw);
        assert_int_equal(cairn_store_put_blob(s, "x", 1, &d, NULL), -EROFS);
        assert_int_equal(cairn_store_remove_blob(s, &w->manifest), -EROFS);
        assert_int_equal(cairn_store_open_blob_fd(s, &w->manifest, &fd), -EOPNOTSUPP);
        assert_int_equal(fd, -1);
        /* Nothing was removed or written through it. */
        uint64_t size;
        assert_int_equal(cairn_store_blob_size(w->local, &w->manifest, &size), 0);
        assert_int_equal(cairn_store_read_ref(w->local, VOL_NAME, "v9", &d), -ENOENT);
        cairn_store_free(s);
}

static void test_volume_read(void **state)
{
        struct world *w = *state;
        struct cairn_store *s = open_http(w);
        struct cairn_volume *vol = NULL;
        struct cairn_ref ref;
        char err[512] = "";

        assert_int_equal(cairn_ref_parse(VOL_NAME ":" VOL_TAG, &ref), 0);
        int r = cairn_volume_open(s, &ref, NULL, &vol, err, sizeof(err));
        if (r < 0)
                fail_msg("volume open: %s (%s)", strerror(-r), err);
        assert_true(cairn_digest_equal(cairn_volume_digest(vol), &w->manifest));
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint8_t *buf = malloc(4 * MiB);
        assert_non_null(buf);
        for (size_t i = 0; i < NFILES; i++) {
                uint32_t ino;
                size_t size = src_files[i].size;
                assert_int_equal(cairn_manifest_resolve(m, src_files[i].path, &ino), 0);
                size_t off = 0;
                while (off < size) {
                        size_t want = size - off < 700 * KiB ? size - off : 700 * KiB;
                        ssize_t n = cairn_volume_read(vol, ino, off, want, buf + off);
                        if (n <= 0)
                                fail_msg("'%s' at %zu: %zd", src_files[i].path, off, n);
                        off += (size_t)n;
                }
                if (size && memcmp(buf, w->data[i], size) != 0)
                        fail_msg("'%s' differs", src_files[i].path);
                assert_int_equal(cairn_volume_read(vol, ino, size, 10, buf), 0);
        }
        free(buf);
        cairn_volume_free(vol);

        /* Unknown tag through the volume API: -ENOENT too. */
        assert_int_equal(cairn_ref_parse(VOL_NAME ":nope", &ref), 0);
        vol = NULL;
        assert_int_equal(cairn_volume_open(s, &ref, NULL, &vol, err, sizeof(err)), -ENOENT);
        assert_null(vol);
        cairn_store_free(s);
}

static void test_bad_urls(void **state)
{
        (void)state;
        struct cairn_store *s = NULL;
        char err[512];
        static const char *const bad[] = {"http://user:hunter2@127.0.0.1/store",
                                          "http://",
                                          "https:///store",
                                          "http://127.0.0.1/store?x=1",
                                          "http://127.0.0.1/st ore",
                                          "http://127.0.0.1/store#frag"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                err[0] = '\0';
                assert_int_equal(cairn_store_open_with(bad[i], NULL, &s, err, sizeof(err)),
                                 -EINVAL);
                assert_null(s);
                assert_true(err[0] != '\0');
                assert_null(strstr(err, "hunter2"));
        }
}

/* A store whose server is gone: bounded failures, on a borrowed engine. */
static void test_server_down(void **state)
{
        (void)state;
        struct cairn_fetch_options fo = {
            .max_attempts = 3, .backoff_base_ms = 5, .backoff_max_ms = 20, .deadline_ms = 5000};
        struct cairn_fetch *f = NULL;
        struct cairn_store *s = NULL;
        struct cairn_store_options so = {.fetch = f};
        struct cairn_digest d;
        char url[64], err[256];
        uint8_t buf[10];

        assert_int_equal(cairn_fetch_new(&fo, &f), 0);
        so.fetch = f;
        cairn_sha256("any", 3, &d);
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/store", free_port());
        assert_int_equal(cairn_store_open_with(url, &so, &s, err, sizeof(err)), 0);
        assert_int_equal(cairn_store_read_ref(s, VOL_NAME, VOL_TAG, &d), -EIO);
        assert_int_equal(cairn_store_read_blob(s, &d, 0, sizeof(buf), buf), -EIO);
        cairn_store_free(s);
        /* The engine was borrowed: it still works after the store is gone. */
        struct cairn_fetch_request q = {.method = "HEAD", .url = url, .out_fd = -1};
        assert_int_equal(cairn_fetch_do(f, &q, NULL), -EIO);
        cairn_fetch_free(f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_open_and_refs), cmocka_unit_test(test_malformed_ref),
            cmocka_unit_test(test_blobs),         cmocka_unit_test(test_blobs_iov),
            cmocka_unit_test(test_read_only),
            cmocka_unit_test(test_volume_read),   cmocka_unit_test(test_bad_urls),
            cmocka_unit_test(test_server_down),
        };
        return cmocka_run_group_tests_name("store_http", tests, world_setup, world_teardown);
}
