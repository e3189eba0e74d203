/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stage and publish records in the state directory (see csi_state.h).
 * The files are read back after a restart, possibly written by another
 * version, so parsing is strict and bounded (CSI_RECORD_MAX) and a record
 * is validated like a request before it is used.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/fdio.h"
#include "cairn/log.h"
#include "csi_state.h"

#define RECORD_VERSION "1"

struct csi_state {
        char *dir;
        int kind_fd[2]; /* DIR/stage, DIR/publish */
};

static const char *const kind_names[] = {
    [CSI_RECORD_STAGE] = "stage",
    [CSI_RECORD_PUBLISH] = "publish",
};

void csi_record_release(struct csi_record *rec)
{
        if (!rec)
                return;
        free(rec->volume_id);
        free(rec->path);
        free(rec->staging_path);
        csi_context_release(&rec->ctx);
        *rec = (struct csi_record){0};
}

/* Appends "key=value\n" with value percent-encoded; returns -ENOMEM. */
static int put(FILE *f, const char *key, const char *value)
{
        if (!value)
                return 0;
        fprintf(f, "%s=", key);
        for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
                if (*p < 0x20 || *p == 0x7f || *p == '%')
                        fprintf(f, "%%%02X", *p);
                else
                        fputc(*p, f);
        }
        fputc('\n', f);
        return ferror(f) ? -ENOMEM : 0;
}

int csi_record_format(const struct csi_record *rec, char **ret_text)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        fputs("version=" RECORD_VERSION "\n", f);
        r = put(f, "kind", kind_names[rec->kind]);
        if (r >= 0)
                r = put(f, "volume_id", rec->volume_id);
        if (r >= 0)
                r = put(f, "path", rec->path);
        if (r >= 0)
                r = put(f, "staging_path", rec->staging_path);
        if (r >= 0)
                r = put(f, "store", rec->ctx.store);
        if (r >= 0)
                r = put(f, "ref", rec->ctx.ref);
        if (r >= 0)
                r = put(f, "memory_limit", rec->ctx.memory_limit);
        if (r >= 0)
                r = put(f, "prefetch", rec->ctx.prefetch);
        if (r >= 0)
                r = put(f, "region", rec->ctx.region);
        if (r >= 0)
                r = put(f, "endpoint", rec->ctx.endpoint);
        if (r >= 0 && rec->ctx.ephemeral)
                r = put(f, "ephemeral", "true");
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0) {
                free(text);
                return r;
        }
        *ret_text = text;
        return 0;
}

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Decodes len bytes of a percent-encoded value; -EINVAL on a bad escape or a NUL. */
static int decode(const char *s, size_t len, char **ret)
{
        char *out = malloc(len + 1);
        size_t n = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int hi, lo;

                if (s[i] != '%') {
                        out[n++] = s[i];
                        continue;
                }
                hi = i + 2 < len ? hexval(s[i + 1]) : -1;
                lo = i + 2 < len ? hexval(s[i + 2]) : -1;
                if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                        free(out);
                        return -EINVAL;
                }
                out[n++] = (char)(hi << 4 | lo);
                i += 2;
        }
        out[n] = '\0';
        *ret = out;
        return 0;
}

int csi_record_parse(const char *text, size_t len, struct csi_record *ret_rec)
{
        struct csi_record rec = {0};
        bool version = false, kind = false;
        char *ephemeral = NULL;
        const char *p = text, *end = text + len;
        char errbuf[256];
        int r = -EINVAL;

        if (len > CSI_RECORD_MAX || memchr(text, '\0', len))
                return -EINVAL;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *eq;
                char **slot = NULL, *value = NULL;
                size_t klen;

                if (!nl)
                        goto out; /* every line ends with a newline: a torn file is invalid */
                eq = memchr(p, '=', (size_t)(nl - p));
                if (!eq)
                        goto out;
                klen = (size_t)(eq - p);
#define KEY(name) (klen == strlen(name) && memcmp(p, name, klen) == 0)
                if (KEY("version")) {
                        if ((size_t)(nl - eq - 1) != strlen(RECORD_VERSION) ||
                            memcmp(eq + 1, RECORD_VERSION, strlen(RECORD_VERSION)) != 0 || version)
                                goto out;
                        version = true;
                        p = nl + 1;
                        continue;
                }
                if (KEY("kind")) {
                        if (kind)
                                goto out;
                        if ((size_t)(nl - eq - 1) == 5 && memcmp(eq + 1, "stage", 5) == 0)
                                rec.kind = CSI_RECORD_STAGE;
                        else if ((size_t)(nl - eq - 1) == 7 && memcmp(eq + 1, "publish", 7) == 0)
                                rec.kind = CSI_RECORD_PUBLISH;
                        else
                                goto out;
                        kind = true;
                        p = nl + 1;
                        continue;
                }
                if (KEY("volume_id"))
                        slot = &rec.volume_id;
                else if (KEY("path"))
                        slot = &rec.path;
                else if (KEY("staging_path"))
                        slot = &rec.staging_path;
                else if (KEY("store"))
                        slot = &rec.ctx.store;
                else if (KEY("ref"))
                        slot = &rec.ctx.ref;
                else if (KEY("memory_limit"))
                        slot = &rec.ctx.memory_limit;
                else if (KEY("prefetch"))
                        slot = &rec.ctx.prefetch;
                else if (KEY("region"))
                        slot = &rec.ctx.region;
                else if (KEY("endpoint"))
                        slot = &rec.ctx.endpoint;
                else if (KEY("ephemeral"))
                        slot = &ephemeral;
                else
                        goto out;
#undef KEY
                if (*slot)
                        goto out;
                r = decode(eq + 1, (size_t)(nl - eq - 1), &value);
                if (r < 0)
                        goto out;
                r = -EINVAL;
                *slot = value;
                p = nl + 1;
        }
        if (!version || !kind || !rec.volume_id || !rec.volume_id[0] || !rec.path ||
            rec.path[0] != '/')
                goto out;
        if (ephemeral) {
                if (strcmp(ephemeral, "true") != 0)
                        goto out;
                rec.ctx.ephemeral = true;
        }
        /* A stage record and an ephemeral publish name a volume; a bind names its source. */
        if (rec.kind == CSI_RECORD_STAGE || !rec.staging_path) {
                if (rec.staging_path || csi_context_validate(&rec.ctx, errbuf, sizeof(errbuf)) < 0)
                        goto out;
        } else if (rec.staging_path[0] != '/' || rec.ctx.store || rec.ctx.ref) {
                goto out;
        }
        *ret_rec = rec;
        rec = (struct csi_record){0};
        r = 0;
out:
        free(ephemeral);
        csi_record_release(&rec);
        return r;
}

static void path_key(const char *path, char hex[CAIRN_DIGEST_HEX_LEN + 1])
{
        struct cairn_digest d;

        cairn_sha256(path, strlen(path), &d);
        cairn_digest_to_hex(&d, hex);
}

static int mkdir_private(int dirfd, const char *name)
{
        struct stat st;

        if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        return 0;
}

int csi_state_open(const char *dir, struct csi_state **ret_state)
{
        struct csi_state *st;
        int fd = -1, r;

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->kind_fd[0] = st->kind_fd[1] = -1;
        st->dir = strdup(dir);
        if (!st->dir) {
                r = -ENOMEM;
                goto fail;
        }
        r = mkdir_private(AT_FDCWD, dir);
        if (r < 0)
                goto fail;
        fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        for (int k = 0; k < 2; k++) {
                r = mkdir_private(fd, kind_names[k]);
                if (r < 0)
                        goto fail;
                st->kind_fd[k] =
                    openat(fd, kind_names[k], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (st->kind_fd[k] < 0) {
                        r = -errno;
                        goto fail;
                }
        }
        close(fd);
        *ret_state = st;
        return 0;
fail:
        if (fd >= 0)
                close(fd);
        csi_state_free(st);
        return r;
}

void csi_state_free(struct csi_state *st)
{
        if (!st)
                return;
        for (int k = 0; k < 2; k++)
                if (st->kind_fd[k] >= 0)
                        close(st->kind_fd[k]);
        free(st->dir);
        free(st);
}

const char *csi_state_dir(const struct csi_state *st)
{
        return st->dir;
}

/* Reads a whole record file (at most CSI_RECORD_MAX bytes). */
static int read_record(int dirfd, const char *name, struct csi_record *ret_rec)
{
        char *buf = NULL;
        size_t len = 0;
        ssize_t n;
        int fd, r;

        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        buf = malloc(CSI_RECORD_MAX + 1);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        while ((n = read(fd, buf + len, CSI_RECORD_MAX + 1 - len)) > 0) {
                len += (size_t)n;
                if (len > CSI_RECORD_MAX)
                        break;
        }
        if (n < 0) {
                r = -errno;
                goto out;
        }
        r = len > CSI_RECORD_MAX ? -EFBIG : csi_record_parse(buf, len, ret_rec);
out:
        free(buf);
        close(fd);
        return r;
}

int csi_state_load(struct csi_state *st, enum csi_record_kind kind, const char *path,
                   struct csi_record *ret_rec)
{
        char key[CAIRN_DIGEST_HEX_LEN + 1];
        struct csi_record rec;
        int r;

        path_key(path, key);
        r = read_record(st->kind_fd[kind], key, &rec);
        if (r < 0)
                return r;
        /* A record under another path's key (copied by hand?) is not this path's. */
        if (rec.kind != kind || strcmp(rec.path, path) != 0) {
                csi_record_release(&rec);
                return -EINVAL;
        }
        *ret_rec = rec;
        return 0;
}

int csi_state_save(struct csi_state *st, const struct csi_record *rec)
{
        char key[CAIRN_DIGEST_HEX_LEN + 1], tmp[CAIRN_DIGEST_HEX_LEN + 16];
        int dirfd = st->kind_fd[rec->kind], fd, r;
        char *text = NULL;

        r = csi_record_format(rec, &text);
        if (r < 0)
                return r;
        path_key(rec->path, key);
        snprintf(tmp, sizeof(tmp), ".%s.tmp", key);
        /* A leftover temporary from a crash is ours: replace it. */
        (void)unlinkat(dirfd, tmp, 0);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        r = cairn_write_all(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r >= 0 && renameat(dirfd, tmp, dirfd, key) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(dirfd, tmp, 0);
        else if (fsync(dirfd) < 0)
                r = -errno;
out:
        free(text);
        return r;
}

int csi_state_remove(struct csi_state *st, enum csi_record_kind kind, const char *path)
{
        char key[CAIRN_DIGEST_HEX_LEN + 1];

        path_key(path, key);
        if (unlinkat(st->kind_fd[kind], key, 0) < 0 && errno != ENOENT)
                return -errno;
        (void)fsync(st->kind_fd[kind]);
        return 0;
}

int csi_state_foreach(struct csi_state *st, enum csi_record_kind kind,
                      int (*fn)(const struct csi_record *rec, void *userdata), void *userdata)
{
        struct dirent *de;
        int fd, r = 0;
        DIR *d;

        /* A private descriptor: readdir state must not be shared between threads. */
        fd = openat(st->kind_fd[kind], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return r;
        }
        while ((de = readdir(d))) {
                struct csi_record rec;
                int q;

                if (de->d_name[0] == '.')
                        continue;
                q = read_record(st->kind_fd[kind], de->d_name, &rec);
                if (q < 0) {
                        if (q != -ENOENT)
                                cairn_warn("ignoring state file '%s/%s/%s': %s", st->dir,
                                           kind_names[kind], de->d_name, strerror(-q));
                        continue;
                }
                r = fn(&rec, userdata);
                csi_record_release(&rec);
                if (r != 0)
                        break;
        }
        closedir(d);
        return r;
}
