/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Volume references.  Names and tags become store paths (refs/NAME/TAG),
 * so the tests concentrate on what must never get through: empty, "." and
 * ".." components, leading dots, slashes at the ends, uppercase names,
 * over-long names and tags, and separators in the wrong place.  Accepted
 * references must parse into the right fields and format back to the
 * same text.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/ref.h"

#define HEX64_UPPER "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
#define HEX64       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char *const good_names[] = {
    "a",    "0",  "llama-3-8b", "org/model", "org/team/model", "a/b/c/d/e/f", "model_v2.final",
    "a..b", "a.", "a-",         "a_",        "9lives",         "org/9/x",     "a/b.c/d-e/f_g",
};

static const char *const bad_names[] = {
    "",     "/",    "/a",    "a/",          "a//b",  "a/b/", ".",     "..",
    ".a",   "a/.",  "a/..",  "a/../b",      "a/.b",  "../a", "-a",    "_a",
    "a/-b", "A",    "Model", "org/Model",   "modeL", "a b",  "a:b",   "a@b",
    "a\\b", "a\tb", "a\nb",  "caf\xc3\xa9", "a+b",   "a~b",  "a%2fb",
};

static const char *const good_tags[] = {
    "v1",
    "latest",
    "V1",
    "1.0.0",
    "a",
    "_",
    "-",
    "...",
    ".hidden",
    "..x",
    "x..",
    "release_2024-01-01",
    "ABC.def-GHI_jkl",
};

static const char *const bad_tags[] = {
    "",     ".",         "..",  "a/b", "/",  "a:b", "a@b", "a b", " ",
    "v1\n", "t\xc3\xa9", "a+b", "a~",  "a*", "a?",  "a\\", "a#b",
};

static void test_name_valid(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(good_names) / sizeof(good_names[0]); i++)
                if (!cairn_ref_name_valid(good_names[i]))
                        fail_msg("name '%s' should be valid", good_names[i]);
        for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
                if (cairn_ref_name_valid(bad_names[i]))
                        fail_msg("name '%s' should be invalid", bad_names[i]);
}

static void test_name_length(void **state)
{
        (void)state;
        char name[CAIRN_REF_NAME_MAX + 2];
        memset(name, 'a', CAIRN_REF_NAME_MAX);
        name[CAIRN_REF_NAME_MAX] = '\0';
        assert_true(cairn_ref_name_valid(name));
        name[CAIRN_REF_NAME_MAX] = 'a';
        name[CAIRN_REF_NAME_MAX + 1] = '\0';
        assert_false(cairn_ref_name_valid(name));
        /* The limit is on the whole name, components included. */
        for (size_t i = 1; i < CAIRN_REF_NAME_MAX; i += 2)
                name[i] = '/';
        name[CAIRN_REF_NAME_MAX] = '\0';
        assert_true(cairn_ref_name_valid(name));
        name[CAIRN_REF_NAME_MAX] = 'b';
        name[CAIRN_REF_NAME_MAX + 1] = '\0';
        assert_false(cairn_ref_name_valid(name));
}

static void test_tag_valid(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(good_tags) / sizeof(good_tags[0]); i++)
                if (!cairn_ref_tag_valid(good_tags[i]))
                        fail_msg("tag '%s' should be valid", good_tags[i]);
        for (size_t i = 0; i < sizeof(bad_tags) / sizeof(bad_tags[0]); i++)
                if (cairn_ref_tag_valid(bad_tags[i]))
                        fail_msg("tag '%s' should be invalid", bad_tags[i]);
        /* Every single byte: only [A-Za-z0-9_.-] (and "." alone is still refused). */
        for (int c = 1; c < 256; c++) {
                char tag[2] = {(char)c, '\0'};
                bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                               (c >= '0' && c <= '9') || c == '_' || c == '-';
                if (cairn_ref_tag_valid(tag) != allowed)
                        fail_msg("tag byte 0x%02x: expected %s", c, allowed ? "valid" : "invalid");
        }
}

static void test_tag_length(void **state)
{
        (void)state;
        char tag[CAIRN_REF_TAG_MAX + 2];
        memset(tag, 'T', sizeof(tag));
        tag[1] = '\0';
        assert_true(cairn_ref_tag_valid(tag));
        tag[1] = 'T';
        tag[CAIRN_REF_TAG_MAX] = '\0';
        assert_true(cairn_ref_tag_valid(tag));
        tag[CAIRN_REF_TAG_MAX] = 'T';
        tag[CAIRN_REF_TAG_MAX + 1] = '\0';
        assert_false(cairn_ref_tag_valid(tag));
}

static struct cairn_ref sentinel_ref(void)
{
        struct cairn_ref r;
        memset(&r, 0x77, sizeof(r));
        return r;
}

static void expect_parse_fails(const char *s)
{
        struct cairn_ref r = sentinel_ref(), before = sentinel_ref();
        int ret = cairn_ref_parse(s, &r);
        if (ret != -EINVAL)
                fail_msg("'%s' parsed with %d, expected -EINVAL", s, ret);
        assert_memory_equal(&r, &before, sizeof(r));
}

static void test_parse_tag(void **state)
{
        (void)state;
        struct cairn_ref r = sentinel_ref();
        assert_int_equal(cairn_ref_parse("org/model:v1.2", &r), 0);
        assert_string_equal(r.name, "org/model");
        assert_string_equal(r.tag, "v1.2");
        assert_false(r.by_digest);

        for (size_t i = 0; i < sizeof(good_names) / sizeof(good_names[0]); i++)
                for (size_t j = 0; j < sizeof(good_tags) / sizeof(good_tags[0]); j++) {
                        char s[512];
                        snprintf(s, sizeof(s), "%s:%s", good_names[i], good_tags[j]);
                        r = sentinel_ref();
                        assert_int_equal(cairn_ref_parse(s, &r), 0);
                        assert_string_equal(r.name, good_names[i]);
                        assert_string_equal(r.tag, good_tags[j]);
                        assert_false(r.by_digest);
                }
}

static void test_parse_digest(void **state)
{
        (void)state;
        struct cairn_ref r = sentinel_ref();
        struct cairn_digest empty;
        cairn_sha256("", 0, &empty);
        assert_int_equal(cairn_ref_parse("org/model@sha256:" HEX64, &r), 0);
        assert_string_equal(r.name, "org/model");
        assert_string_equal(r.tag, "");
        assert_true(r.by_digest);
        assert_true(cairn_digest_equal(&r.digest, &empty));

        /* Uppercase hex is accepted on input. */
        char s[200];
        snprintf(s, sizeof(s), "m@sha256:%s", HEX64_UPPER);
        r = sentinel_ref();
        assert_int_equal(cairn_ref_parse(s, &r), 0);
        assert_true(cairn_digest_equal(&r.digest, &empty));
}

static void test_parse_rejects(void **state)
{
        (void)state;
        char s[1024];

        expect_parse_fails("");
        expect_parse_fails("model");  /* neither tag nor digest */
        expect_parse_fails("model:"); /* empty tag */
        expect_parse_fails(":v1");    /* empty name */
        expect_parse_fails(":");
        expect_parse_fails("@sha256:" HEX64);
        expect_parse_fails("model@");
        expect_parse_fails("model@sha256:");
        expect_parse_fails("model@" HEX64); /* no algorithm */
        expect_parse_fails("model@sha512:" HEX64);
        expect_parse_fails("model@sha256:" HEX64 "0");
        expect_parse_fails("model@sha256:" HEX64 ":v1");
        expect_parse_fails("model:v1@sha256:" HEX64); /* both */
        expect_parse_fails("model:v1:v2");
        expect_parse_fails("Model:v1");
        expect_parse_fails("model:.");
        expect_parse_fails("model:..");
        expect_parse_fails("../model:v1");
        expect_parse_fails("org//model:v1");
        expect_parse_fails("org/model/:v1");
        expect_parse_fails("/org/model:v1");
        expect_parse_fails("model:v/1");
        expect_parse_fails("model:v 1");
        expect_parse_fails("model@@sha256:" HEX64);
        expect_parse_fails("model:v1\n");

        for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
                snprintf(s, sizeof(s), "%s:v1", bad_names[i]);
                /* "a:b" as a name makes "a:b:v1", whose last colon is legal; skip it. */
                if (strchr(bad_names[i], ':'))
                        continue;
                expect_parse_fails(s);
                snprintf(s, sizeof(s), "%s@sha256:%s", bad_names[i], HEX64);
                if (strchr(bad_names[i], '@'))
                        continue;
                expect_parse_fails(s);
        }
        for (size_t i = 0; i < sizeof(bad_tags) / sizeof(bad_tags[0]); i++) {
                snprintf(s, sizeof(s), "model:%s", bad_tags[i]);
                expect_parse_fails(s);
        }
}

static void test_parse_lengths(void **state)
{
        (void)state;
        char s[1024], name[CAIRN_REF_NAME_MAX + 2], tag[CAIRN_REF_TAG_MAX + 2];
        struct cairn_ref r;

        memset(name, 'n', sizeof(name));
        memset(tag, 't', sizeof(tag));
        name[CAIRN_REF_NAME_MAX] = '\0';
        tag[CAIRN_REF_TAG_MAX] = '\0';
        snprintf(s, sizeof(s), "%s:%s", name, tag);
        assert_int_equal(cairn_ref_parse(s, &r), 0);
        assert_int_equal(strlen(r.name), CAIRN_REF_NAME_MAX);
        assert_int_equal(strlen(r.tag), CAIRN_REF_TAG_MAX);
        snprintf(s, sizeof(s), "%s@sha256:%s", name, HEX64);
        assert_int_equal(cairn_ref_parse(s, &r), 0);
        assert_int_equal(strlen(r.name), CAIRN_REF_NAME_MAX);

        /* One byte over, in the name or the tag. */
        name[CAIRN_REF_NAME_MAX] = 'n';
        name[CAIRN_REF_NAME_MAX + 1] = '\0';
        snprintf(s, sizeof(s), "%s:%s", name, "v1");
        expect_parse_fails(s);
        snprintf(s, sizeof(s), "%s@sha256:%s", name, HEX64);
        expect_parse_fails(s);
        tag[CAIRN_REF_TAG_MAX] = 't';
        tag[CAIRN_REF_TAG_MAX + 1] = '\0';
        snprintf(s, sizeof(s), "model:%s", tag);
        expect_parse_fails(s);
        /* Very long input must not overflow anything either. */
        char huge[4096];
        memset(huge, 'a', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        expect_parse_fails(huge);
        huge[100] = ':';
        expect_parse_fails(huge);
        huge[100] = '@';
        expect_parse_fails(huge);
}

static void round_trip(const char *text)
{
        struct cairn_ref r, again;
        char buf[600];
        assert_int_equal(cairn_ref_parse(text, &r), 0);
        assert_int_equal(cairn_ref_format(&r, buf, sizeof(buf)), 0);
        assert_string_equal(buf, text);
        assert_int_equal(cairn_ref_parse(buf, &again), 0);
        assert_string_equal(again.name, r.name);
        assert_string_equal(again.tag, r.tag);
        assert_int_equal(again.by_digest, r.by_digest);
        if (r.by_digest)
                assert_true(cairn_digest_equal(&again.digest, &r.digest));
}

static void test_format_round_trip(void **state)
{
        (void)state;
        round_trip("m:v");
        round_trip("org/model:v1.0");
        round_trip("org/model@sha256:" HEX64);
        round_trip("a/b/c@sha256:" HEX64);
        for (size_t i = 0; i < sizeof(good_names) / sizeof(good_names[0]); i++) {
                char s[512];
                snprintf(s, sizeof(s), "%s:%s", good_names[i],
                         good_tags[i % (sizeof(good_tags) / sizeof(good_tags[0]))]);
                round_trip(s);
                snprintf(s, sizeof(s), "%s@sha256:%s", good_names[i], HEX64);
                round_trip(s);
        }

        /* Uppercase hex on input formats back in lowercase. */
        struct cairn_ref r;
        char buf[200];
        assert_int_equal(cairn_ref_parse("m@sha256:" HEX64_UPPER, &r), 0);
        assert_int_equal(cairn_ref_format(&r, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "m@sha256:" HEX64);

        /* Longest possible refs fit in a buffer sized from the limits. */
        char name[CAIRN_REF_NAME_MAX + 1], tag[CAIRN_REF_TAG_MAX + 1], s[600];
        memset(name, 'x', CAIRN_REF_NAME_MAX);
        name[CAIRN_REF_NAME_MAX] = '\0';
        memset(tag, 'Y', CAIRN_REF_TAG_MAX);
        tag[CAIRN_REF_TAG_MAX] = '\0';
        snprintf(s, sizeof(s), "%s:%s", name, tag);
        round_trip(s);
        snprintf(s, sizeof(s), "%s@sha256:%s", name, HEX64);
        round_trip(s);
}

static void test_format_too_small(void **state)
{
        (void)state;
        struct cairn_ref r;
        char buf[128];
        assert_int_equal(cairn_ref_parse("org/model:v1", &r), 0);
        /* "org/model:v1" is 12 bytes: 13 with the NUL fit, 12 do not. */
        assert_int_equal(cairn_ref_format(&r, buf, 13), 0);
        assert_string_equal(buf, "org/model:v1");
        assert_int_equal(cairn_ref_format(&r, buf, 12), -ENAMETOOLONG);
        assert_int_equal(cairn_ref_format(&r, buf, 1), -ENAMETOOLONG);

        assert_int_equal(cairn_ref_parse("m@sha256:" HEX64, &r), 0);
        size_t need = strlen("m@sha256:" HEX64) + 1;
        assert_int_equal(cairn_ref_format(&r, buf, need), 0);
        assert_int_equal(cairn_ref_format(&r, buf, need - 1), -ENAMETOOLONG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_name_valid),        cmocka_unit_test(test_name_length),
            cmocka_unit_test(test_tag_valid),         cmocka_unit_test(test_tag_length),
            cmocka_unit_test(test_parse_tag),         cmocka_unit_test(test_parse_digest),
            cmocka_unit_test(test_parse_rejects),     cmocka_unit_test(test_parse_lengths),
            cmocka_unit_test(test_format_round_trip), cmocka_unit_test(test_format_too_small),
        };
        return cmocka_run_group_tests_name("ref", tests, NULL, NULL);
}
