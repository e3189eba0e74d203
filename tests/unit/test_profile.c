/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access profiles: strict parsing (header, line shape, lowercase hex,
 * truncation), the atomic writer round trip, and resolution onto a
 * manifest (profile order kept, duplicates and unknown ids dropped).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/manifest.h"
#include "cairn/profile.h"

static struct cairn_digest id_of(unsigned n)
{
        struct cairn_digest d;
        cairn_sha256(&n, sizeof(n), &d);
        return d;
}

static void test_round_trip(void **state)
{
        (void)state;
        char path[] = "/tmp/cairn-test-profile-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        struct cairn_digest ids[3] = {id_of(1), id_of(2), id_of(3)};
        assert_int_equal(cairn_profile_write(path, ids, 3), 0);
        struct cairn_profile p;
        char err[256];
        assert_int_equal(cairn_profile_load(path, &p, err, sizeof(err)), 0);
        assert_int_equal(p.n, 3);
        for (int i = 0; i < 3; i++)
                assert_true(cairn_digest_equal(&p.ids[i], &ids[i]));
        cairn_profile_release(&p);
        unlink(path);
}

static void expect_invalid(const char *text)
{
        struct cairn_profile p = {0};
        char err[256] = "";
        assert_int_equal(cairn_profile_parse(text, strlen(text), &p, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
        assert_null(p.ids);
}

static void test_rejects_malformed(void **state)
{
        (void)state;
        char hex[65];
        struct cairn_digest d = id_of(9);
        cairn_digest_to_hex(&d, hex);
        char buf[512];
        expect_invalid("");
        expect_invalid("cairn-profile 2\n");
        snprintf(buf, sizeof(buf), "cairn-profile 1\n%s", hex); /* no final newline */
        expect_invalid(buf);
        snprintf(buf, sizeof(buf), "cairn-profile 1\n%.63s\n", hex); /* short line */
        expect_invalid(buf);
        snprintf(buf, sizeof(buf), "cairn-profile 1\n%s\n", hex);
        buf[16] = 'A'; /* uppercase: one id, one spelling */
        expect_invalid(buf);
        snprintf(buf, sizeof(buf), "cairn-profile 1\n%s\n", hex);
        buf[20] = 'g';
        expect_invalid(buf);
        snprintf(buf, sizeof(buf), "cairn-profile 1\n%s\r", hex);
        expect_invalid(buf);
}

static void test_resolve(void **state)
{
        (void)state;
        struct cairn_chunker_params params;
        cairn_chunker_params_default(&params);
        struct cairn_manifest_writer *w;
        assert_int_equal(cairn_manifest_writer_new(&params, &w), 0);
        struct cairn_manifest_inode root = {.mode = 040755, .nlink = 2, .size = 1, .first = 0,
                                            .count = 1};
        uint32_t ino;
        assert_int_equal(cairn_manifest_writer_add_inode(w, &root, &ino), 0);
        struct cairn_manifest_inode file = {.mode = 0100644, .nlink = 1, .size = 4 * 100,
                                            .first = 0, .count = 4};
        assert_int_equal(cairn_manifest_writer_add_inode(w, &file, &ino), 0);
        uint64_t off;
        assert_int_equal(cairn_manifest_writer_add_string(w, "f", 1, &off), 0);
        struct cairn_manifest_dirent de = {.name_offset = off, .name_len = 1, .inode = 1};
        assert_int_equal(cairn_manifest_writer_add_dirent(w, &de, NULL), 0);
        struct cairn_digest blob = id_of(77);
        uint32_t bidx;
        assert_int_equal(cairn_manifest_writer_add_blob(w, &blob, 400, &bidx), 0);
        /* Chunks 0..3 with ids 10, 11, 10, 12 (a repeated chunk). */
        unsigned ids[4] = {10, 11, 10, 12};
        for (int i = 0; i < 4; i++) {
                struct cairn_manifest_chunk c = {.id = id_of(ids[i]), .file_offset = 100u * i,
                                                 .blob_offset = 100u * i, .blob = bidx,
                                                 .stored_size = 100, .size = 100};
                assert_int_equal(cairn_manifest_writer_add_chunk(w, &c, NULL), 0);
        }
        void *buf;
        size_t size;
        char err[256];
        assert_int_equal(cairn_manifest_writer_finish(w, &buf, &size, err, sizeof(err)), 0);
        struct cairn_manifest m;
        assert_int_equal(cairn_manifest_validate(buf, size, &m, err, sizeof(err)), 0);

        /* A profile stored in the manifest itself. */
        uint64_t order[3] = {3, 0, 1};
        assert_int_equal(cairn_manifest_writer_set_profile(w, order, 3), 0);
        void *pbuf;
        size_t psize;
        assert_int_equal(cairn_manifest_writer_finish(w, &pbuf, &psize, err, sizeof(err)), 0);
        struct cairn_manifest pm;
        assert_int_equal(cairn_manifest_validate(pbuf, psize, &pm, err, sizeof(err)), 0);
        assert_int_equal(pm.profile_count, 3);
        assert_int_equal(pm.profile[0], 3);
        assert_int_equal(pm.profile[2], 1);
        assert_int_equal(psize % 8, 0);
        /* An entry past the chunk table, nonzero padding, a count past the chunks: refused. */
        ((uint64_t *)((uint8_t *)pbuf + psize))[-1] = 4;
        assert_int_equal(cairn_manifest_validate(pbuf, psize, &pm, err, sizeof(err)), -EINVAL);
        ((uint64_t *)((uint8_t *)pbuf + psize))[-1] = 1;
        ((uint8_t *)pbuf)[psize - 3 * 8 - 1] = 1;
        assert_int_equal(cairn_manifest_validate(pbuf, psize, &pm, err, sizeof(err)), -EINVAL);
        ((uint8_t *)pbuf)[psize - 3 * 8 - 1] = 0;
        assert_int_equal(cairn_manifest_validate(pbuf, psize, &pm, err, sizeof(err)), 0);
        ((struct cairn_manifest_header *)pbuf)->profile_count = 5;
        assert_int_equal(cairn_manifest_validate(pbuf, psize, &pm, err, sizeof(err)), -EINVAL);
        free(pbuf);

        struct cairn_digest pids[5] = {id_of(12), id_of(99), id_of(10), id_of(12), id_of(11)};
        struct cairn_profile p = {.ids = pids, .n = 5};
        uint64_t *chunks;
        size_t n;
        assert_int_equal(cairn_profile_resolve(&p, &m, &chunks, &n), 0);
        assert_int_equal(n, 3); /* 99 unknown, the second 12 a repeat */
        assert_int_equal(chunks[0], 3);
        assert_int_equal(chunks[1], 0);
        assert_int_equal(chunks[2], 1);
        free(chunks);
        free(buf);
        cairn_manifest_writer_free(w);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_round_trip),
            cmocka_unit_test(test_rejects_malformed),
            cmocka_unit_test(test_resolve),
        };
        return cmocka_run_group_tests_name("profile", tests, NULL, NULL);
}
