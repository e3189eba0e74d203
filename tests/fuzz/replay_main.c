/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A main() for fuzz targets built without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named on the command line or
 * found (non-recursively) in a named directory.  This is how the checked-in
 * corpora run as ordinary tests with any compiler.  An empty corpus is an
 * error, so a missing or misplaced corpus directory cannot pass silently.
 *
 * Usage: replay_<parser> DIR|FILE...
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Corpus files are small seeds; anything bigger is a mistake, not an input. */
#define REPLAY_MAX_SIZE (64u << 20)

static int replay_file(const char *path, unsigned long *count)
{
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        struct stat st;
        int r;

        if (!f) {
                r = -errno;
                fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(-r));
                return r;
        }
        if (fstat(fileno(f), &st) < 0) {
                r = -errno;
                fprintf(stderr, "replay: cannot stat '%s': %s\n", path, strerror(-r));
                goto out;
        }
        if (st.st_size > REPLAY_MAX_SIZE) {
                r = -EFBIG;
                fprintf(stderr, "replay: '%s' is larger than %u bytes\n", path, REPLAY_MAX_SIZE);
                goto out;
        }
        size_t size = (size_t)st.st_size;
        buf = malloc(size ? size : 1);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        if (size && fread(buf, 1, size, f) != size) {
                r = -EIO;
                fprintf(stderr, "replay: short read of '%s'\n", path);
                goto out;
        }
        LLVMFuzzerTestOneInput(buf, size);
        (*count)++;
        r = 0;
out:
        free(buf);
        fclose(f);
        return r;
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of dir, in name order so that runs are reproducible. */
static int replay_dir(const char *dir, unsigned long *count)
{
        DIR *d = opendir(dir);
        char **names = NULL;
        size_t n = 0, cap = 0;
        int r = 0;

        if (!d) {
                r = -errno;
                fprintf(stderr, "replay: cannot open directory '%s': %s\n", dir, strerror(-r));
                return r;
        }
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        char **p = realloc(names, ncap * sizeof(*names));
                        if (!p) {
                                r = -ENOMEM;
                                goto out;
                        }
                        names = p;
                        cap = ncap;
                }
                if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
                n++;
        }
        qsort(names, n, sizeof(*names), name_cmp);
        for (size_t i = 0; i < n && r == 0; i++) {
                struct stat st;
                if (stat(names[i], &st) < 0) {
                        r = -errno;
                        fprintf(stderr, "replay: cannot stat '%s': %s\n", names[i], strerror(-r));
                } else if (S_ISREG(st.st_mode)) {
                        r = replay_file(names[i], count);
                }
        }
out:
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        closedir(d);
        return r;
}

int main(int argc, char **argv)
{
        unsigned long count = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "replay: cannot stat '%s': %s\n", argv[i], strerror(errno));
                        return 1;
                }
                r = S_ISDIR(st.st_mode) ? replay_dir(argv[i], &count)
                                        : replay_file(argv[i], &count);
                if (r < 0)
                        return 1;
        }
        printf("replayed %lu inputs\n", count);
        if (count == 0) {
                fprintf(stderr, "replay: no inputs found\n");
                return 1;
        }
        return 0;
}
