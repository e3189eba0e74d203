/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access profiles (see include/cairn/profile.h): a strict line parser,
 * an atomic writer, and the mapping from chunk ids to chunk indexes of a
 * manifest through a temporary open-addressing table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/profile.h"

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
        if (!errbuf || !errlen)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
}

int cairn_profile_parse(const char *text, size_t len, struct cairn_profile *ret_profile,
                        char *errbuf, size_t errlen)
{
        const size_t hlen = strlen(CAIRN_PROFILE_HEADER), line = CAIRN_DIGEST_HEX_LEN + 1;
        if (len < hlen || memcmp(text, CAIRN_PROFILE_HEADER, hlen) != 0) {
                set_err(errbuf, errlen, "not a cairn profile (missing \"cairn-profile 1\" line)");
                return -EINVAL;
        }
        size_t body = len - hlen;
        if (body % line != 0) {
                set_err(errbuf, errlen, "truncated or malformed line at byte %zu",
                        hlen + body / line * line);
                return -EINVAL;
        }
        size_t n = body / line;
        if (n > CAIRN_PROFILE_MAX_IDS) {
                set_err(errbuf, errlen, "too many chunk ids (%zu, at most %u)", n,
                        CAIRN_PROFILE_MAX_IDS);
                return -E2BIG;
        }
        struct cairn_digest *ids = malloc((n ? n : 1) * sizeof(*ids));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *l = text + hlen + i * line;
                bool lower = true;
                for (size_t k = 0; k < CAIRN_DIGEST_HEX_LEN; k++)
                        if (l[k] >= 'A' && l[k] <= 'F')
                                lower = false;
                if (!lower || l[CAIRN_DIGEST_HEX_LEN] != '\n' ||
                    cairn_digest_from_hex(l, CAIRN_DIGEST_HEX_LEN, &ids[i]) < 0) {
                        set_err(errbuf, errlen, "line %zu is not a chunk id", i + 2);
                        free(ids);
                        return -EINVAL;
                }
        }
        ret_profile->ids = ids;
        ret_profile->n = n;
        return 0;
}

int cairn_profile_load(const char *path, struct cairn_profile *ret_profile, char *errbuf,
                       size_t errlen)
{
        struct stat st;
        int r;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                set_err(errbuf, errlen, "cannot open '%s': %s", path, strerror(-r));
                return r;
        }
        const uint64_t cap = strlen(CAIRN_PROFILE_HEADER) +
                             (uint64_t)CAIRN_PROFILE_MAX_IDS * (CAIRN_DIGEST_HEX_LEN + 1);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > cap) {
                close(fd);
                set_err(errbuf, errlen, "'%s' is not a profile file of a sane size", path);
                return -EINVAL;
        }
        size_t len = (size_t)st.st_size;
        char *buf = malloc(len ? len : 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        size_t got = 0;
        while (got < len) {
                ssize_t n = read(fd, buf + got, len - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        close(fd);
        if (got != len) {
                free(buf);
                set_err(errbuf, errlen, "cannot read '%s'", path);
                return -EIO;
        }
        r = cairn_profile_parse(buf, len, ret_profile, errbuf, errlen);
        free(buf);
        return r;
}

void cairn_profile_release(struct cairn_profile *profile)
{
        if (!profile)
                return;
        free(profile->ids);
        profile->ids = NULL;
        profile->n = 0;
}

int cairn_profile_write(const char *path, const struct cairn_digest *ids, size_t n)
{
        char *tmp = NULL;
        int r = 0;
        if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0)
                return -ENOMEM;
        FILE *f = fopen(tmp, "we");
        if (!f) {
                r = -errno;
                free(tmp);
                return r;
        }
        fputs(CAIRN_PROFILE_HEADER, f);
        for (size_t i = 0; i < n; i++) {
                char hex[CAIRN_DIGEST_HEX_LEN + 1];
                cairn_digest_to_hex(&ids[i], hex);
                fputs(hex, f);
                fputc('\n', f);
        }
        if (fflush(f) != 0 || ferror(f))
                r = -EIO;
        if (fclose(f) != 0 && r >= 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        free(tmp);
        return r;
}

int cairn_profile_resolve(const struct cairn_profile *profile, const struct cairn_manifest *m,
                          uint64_t **ret_chunks, size_t *ret_n)
{
        uint64_t nchunks = m->hdr->chunk_count;
        size_t cap = 16;
        while (cap < nchunks * 2)
                cap *= 2;
        /* Slot value: chunk index + 1 (0 = empty); first occurrence of each id wins. */
        uint64_t *table = calloc(cap, sizeof(*table));
        uint64_t *out = malloc((profile->n ? profile->n : 1) * sizeof(*out));
        uint8_t *taken = calloc(nchunks ? nchunks : 1, 1);
        if (!table || !out || !taken) {
                free(table);
                free(out);
                free(taken);
                return -ENOMEM;
        }
        for (uint64_t i = 0; i < nchunks; i++) {
                uint64_t h;
                memcpy(&h, m->chunks[i].id.bytes, sizeof(h));
                for (size_t s = h & (cap - 1);; s = (s + 1) & (cap - 1)) {
                        if (!table[s]) {
                                table[s] = i + 1;
                                break;
                        }
                        if (cairn_digest_equal(&m->chunks[table[s] - 1].id, &m->chunks[i].id))
                                break;
                }
        }
        size_t n = 0;
        for (size_t k = 0; k < profile->n; k++) {
                uint64_t h;
                memcpy(&h, profile->ids[k].bytes, sizeof(h));
                for (size_t s = h & (cap - 1); table[s]; s = (s + 1) & (cap - 1)) {
                        uint64_t idx = table[s] - 1;
                        if (!cairn_digest_equal(&m->chunks[idx].id, &profile->ids[k]))
                                continue;
                        if (!taken[idx]) {
                                taken[idx] = 1;
                                out[n++] = idx;
                        }
                        break;
                }
        }
        free(table);
        free(taken);
        *ret_chunks = out;
        *ret_n = n;
        return 0;
}
