/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Credentials files for cairnfs (see csi_secrets.h).  The files are
 * created with O_EXCL in a directory that mkdtemp() just made 0700, so no
 * other user can have prepared or opened them; their text is built in
 * memory, written once and the buffer wiped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/fdio.h"
#include "cairn/log.h"
#include "csi_secrets.h"

#define DIR_PREFIX "mount-"

static void wipe_string(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

void csi_secrets_release(struct csi_secrets *s)
{
        if (!s)
                return;
        wipe_string(s->access_key);
        wipe_string(s->secret_key);
        wipe_string(s->session_token);
        *s = (struct csi_secrets){0};
}

int csi_secrets_empty(const struct csi_secrets *s)
{
        return !s->access_key && !s->secret_key && !s->session_token;
}

/* A value for an INI line: printable ASCII, no spaces, not empty, bounded. */
static bool value_ok(const char *v)
{
        size_t n = strlen(v);

        if (n == 0 || n > CSI_SECRET_VALUE_MAX)
                return false;
        for (; *v; v++)
                if ((unsigned char)*v <= 0x20 || (unsigned char)*v >= 0x7f)
                        return false;
        return true;
}

int csi_secrets_parse(const struct csi_kv *kv, size_t n, struct csi_secrets *ret_secrets,
                      char *errbuf, size_t errlen)
{
        /* Both spellings: the environment's and the credentials file's. */
        static const struct {
                const char *env_name;
                const char *file_name;
                size_t offset;
        } keys[] = {
            {"AWS_ACCESS_KEY_ID", "aws_access_key_id", offsetof(struct csi_secrets, access_key)},
            {"AWS_SECRET_ACCESS_KEY", "aws_secret_access_key",
             offsetof(struct csi_secrets, secret_key)},
            {"AWS_SESSION_TOKEN", "aws_session_token", offsetof(struct csi_secrets, session_token)},
        };
        struct csi_secrets s = {0};
        int r = -EINVAL;

        for (size_t i = 0; i < n; i++) {
                char **slot = NULL;

                for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                        if (strcmp(kv[i].key, keys[k].env_name) == 0 ||
                            strcmp(kv[i].key, keys[k].file_name) == 0)
                                slot = (char **)((char *)&s + keys[k].offset);
                if (!slot) {
                        /* The key may be a value pasted in the wrong place: do not echo it. */
                        snprintf(errbuf, errlen,
                                 "secrets: unsupported key (expected AWS_ACCESS_KEY_ID, "
                                 "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)");
                        goto fail;
                }
                if (*slot) {
                        snprintf(errbuf, errlen, "secrets: a key is given twice");
                        goto fail;
                }
                if (!value_ok(kv[i].value)) {
                        snprintf(errbuf, errlen,
                                 "secrets: a value is empty, too long or has spaces or "
                                 "control characters");
                        goto fail;
                }
                *slot = strdup(kv[i].value);
                if (!*slot) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        if (!s.access_key != !s.secret_key || (s.session_token && !s.access_key)) {
                snprintf(errbuf, errlen,
                         "secrets: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together");
                goto fail;
        }
        *ret_secrets = s;
        return 0;
fail:
        csi_secrets_release(&s);
        return r;
}

static int write_private(int dirfd, const char *name, const char *text)
{
        int fd, r;

        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = cairn_write_all(fd, text, strlen(text));
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        return r;
}

int csi_secrets_write(const char *parent, const struct csi_secrets *s,
                      const struct csi_context *ctx, char **ret_dir)
{
        char *dir = NULL, *text = NULL;
        size_t len = 0;
        int dirfd = -1, r;
        FILE *f;

        if (mkdir(parent, 0700) < 0 && errno != EEXIST)
                return -errno;
        if (asprintf(&dir, "%s/" DIR_PREFIX "XXXXXX", parent) < 0)
                return -ENOMEM;
        if (!mkdtemp(dir)) {
                r = -errno;
                free(dir);
                return r;
        }
        dirfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dirfd < 0) {
                r = -errno;
                goto fail;
        }
        f = open_memstream(&text, &len);
        if (!f) {
                r = -ENOMEM;
                goto fail;
        }
        fputs("[default]\n", f);
        if (s && s->access_key) {
                fprintf(f, "aws_access_key_id = %s\n", s->access_key);
                fprintf(f, "aws_secret_access_key = %s\n", s->secret_key);
        }
        if (s && s->session_token)
                fprintf(f, "aws_session_token = %s\n", s->session_token);
        if (fclose(f) != 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = write_private(dirfd, "credentials", text);
        explicit_bzero(text, len);
        free(text);
        text = NULL;
        if (r < 0)
                goto fail;
        f = open_memstream(&text, &len);
        if (!f) {
                r = -ENOMEM;
                goto fail;
        }
        fputs("[default]\n", f);
        if (ctx->region)
                fprintf(f, "region = %s\n", ctx->region);
        if (ctx->endpoint)
                fprintf(f, "endpoint_url = %s\n", ctx->endpoint);
        if (fclose(f) != 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = write_private(dirfd, "config", text);
        free(text);
        text = NULL;
        if (r < 0)
                goto fail;
        close(dirfd);
        *ret_dir = dir;
        return 0;
fail:
        if (text) {
                explicit_bzero(text, len);
                free(text);
        }
        if (dirfd >= 0)
                close(dirfd);
        csi_secrets_remove(dir);
        free(dir);
        return r;
}

int csi_secrets_remove(const char *dir)
{
        struct dirent *de;
        int fd, r = 0;
        DIR *d;

        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return r;
        }
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                    unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        r = -errno;
        closedir(d);
        if (rmdir(dir) < 0 && errno != ENOENT && r >= 0)
                r = -errno;
        return r;
}

void csi_secrets_cleanup(const char *parent)
{
        struct dirent *de;
        DIR *d = opendir(parent);

        if (!d)
                return;
        while ((de = readdir(d))) {
                char *path;

                if (strncmp(de->d_name, DIR_PREFIX, strlen(DIR_PREFIX)) != 0)
                        continue;
                if (asprintf(&path, "%s/%s", parent, de->d_name) < 0)
                        continue;
                if (csi_secrets_remove(path) < 0)
                        cairn_warn("cannot remove '%s': %s", path, strerror(errno));
                free(path);
        }
        closedir(d);
}
