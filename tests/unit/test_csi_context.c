/* SPDX-License-Identifier: Apache-2.0 */
/*
 * volume_context and secrets validation of cairn-csi (csi/csi_context.c,
 * csi/csi_secrets.c).  Both are untrusted maps from a pod spec or a PV:
 * only the documented keys are accepted, each value is checked against
 * what its consumer takes (store URL schemes, refs via libcairn, sizes,
 * regions, endpoints), nothing that could smuggle an option or a line
 * into cairnfs's arguments or an INI file gets through, and error
 * messages never echo a secret.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "csi_context.h"
#include "csi_secrets.h"

#define REF_BY_DIGEST "m@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int parse2(const char *store, const char *ref, struct csi_context *ctx)
{
        struct csi_kv kv[] = {{"store", store}, {"ref", ref}};
        char why[512];

        return csi_context_parse(kv, 2, ctx, why, sizeof(why));
}

static void test_stores(void **state)
{
        static const char *const good[] = {
            "file:///srv/cairn",
            "file:///a",
            "http://127.0.0.1:8080/store",
            "https://models.example.com/prod",
            "https://host",
            "s3://bucket",
            "s3://bucket/prefix/deeper",
        };
        static const char *const bad[] = {
            "",
            "/srv/cairn",
            "srv/cairn",
            "file://relative",
            "file:///srv/../etc",
            "file:///srv/./x",
            "file:///srv//x",
            "file:///",
            "ftp://host/x",
            "s3://",
            "http://",
            "https://user:secret@host/store",
            "s3://key@bucket",
            "http://host/store?token=secret",
            "http://host/store#frag",
            "http://host/a b",
            "http://host/a\nb",
            "http://host/a,allow_root",
            "http://host/a\\b",
            "gs://bucket",
            "S3://bucket",
        };
        struct csi_context ctx;

        (void)state;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                if (parse2(good[i], "model:v1", &ctx) != 0)
                        fail_msg("store '%s' refused", good[i]);
                assert_string_equal(ctx.store, good[i]);
                assert_string_equal(ctx.ref, "model:v1");
                assert_false(ctx.ephemeral);
                csi_context_release(&ctx);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (parse2(bad[i], "model:v1", &ctx) != -EINVAL)
                        fail_msg("store '%s' accepted", bad[i]);
}

/* A refused store URL is quoted in the error, but never its credentials or query. */
static void test_store_redacted(void **state)
{
        static const char *const urls[] = {
            "https://user:canary@host/store",      "https://canary@host/store",
            "http://a@b:canary@host/store",        "s3://canary@bucket",
            "http://host/store?token=canary",      "http://host/store#canary",
            "http://u:canary@host/store?x=canary",
        };
        struct csi_context ctx;

        (void)state;
        for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
                struct csi_kv kv[] = {{"store", urls[i]}, {"ref", "m:v1"}};
                char why[512] = "";

                assert_int_equal(csi_context_parse(kv, 2, &ctx, why, sizeof(why)), -EINVAL);
                if (strstr(why, "canary"))
                        fail_msg("'%s' leaked into: %s", urls[i], why);
                assert_non_null(strstr(why, "***"));
        }
        {
                struct csi_kv kv[] = {{"store", "s3://b"},
                                      {"ref", "m:v1"},
                                      {"endpoint", "http://k:canary@minio:9000"}};
                char why[512] = "";

                assert_int_equal(csi_context_parse(kv, 3, &ctx, why, sizeof(why)), -EINVAL);
                assert_null(strstr(why, "canary"));
        }
}

static void test_refs(void **state)
{
        static const char *const good[] = {"model:v1", "org/model:latest", REF_BY_DIGEST};
        static const char *const bad[] = {"",          "model",       "Model:v1", "../x:v1",
                                          "model:v1 ", "m@sha256:00", "model:",   "model#v1"};
        struct csi_context ctx;

        (void)state;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                assert_int_equal(parse2("s3://b", good[i], &ctx), 0);
                csi_context_release(&ctx);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (parse2("s3://b", bad[i], &ctx) != -EINVAL)
                        fail_msg("ref '%s' accepted", bad[i]);
}

static void test_keys(void **state)
{
        struct csi_context ctx;
        char why[512] = "";

        (void)state;
        /* Required keys. */
        {
                struct csi_kv kv[] = {{"store", "s3://b"}};

                assert_int_equal(csi_context_parse(kv, 1, &ctx, why, sizeof(why)), -EINVAL);
                assert_non_null(strstr(why, "ref"));
                assert_int_equal(csi_context_parse(NULL, 0, &ctx, why, sizeof(why)), -EINVAL);
        }
        /* Options, pod information, the ephemeral flag. */
        {
                struct csi_kv kv[] = {
                    {"store", "s3://b/p"},
                    {"ref", "m:v1"},
                    {"memory_limit", "128M"},
                    {"region", "eu-west-1"},
                    {"endpoint", "http://127.0.0.1:9000"},
                    {"csi.storage.k8s.io/ephemeral", "true"},
                    {"csi.storage.k8s.io/pod.name", "anything goes, not ours"},
                    {"csi.storage.k8s.io/serviceAccount.name", "x"},
                };

                assert_int_equal(csi_context_parse(kv, 8, &ctx, why, sizeof(why)), 0);
                assert_string_equal(ctx.memory_limit, "128M");
                assert_string_equal(ctx.region, "eu-west-1");
                assert_string_equal(ctx.endpoint, "http://127.0.0.1:9000");
                assert_true(ctx.ephemeral);
                assert_true(csi_context_is_s3(&ctx));
                csi_context_release(&ctx);
        }
        /* A misspelt option fails loudly; duplicates and bad flags too. */
        {
                struct csi_kv unknown[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"memoryLimit", "1G"}};
                struct csi_kv dup[] = {{"store", "s3://b"}, {"ref", "m:v1"}, {"ref", "m:v2"}};
                struct csi_kv flag[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"csi.storage.k8s.io/ephemeral", "yes"}};

                assert_int_equal(csi_context_parse(unknown, 3, &ctx, why, sizeof(why)), -EINVAL);
                assert_non_null(strstr(why, "memoryLimit"));
                assert_int_equal(csi_context_parse(dup, 3, &ctx, why, sizeof(why)), -EINVAL);
                assert_int_equal(csi_context_parse(flag, 3, &ctx, why, sizeof(why)), -EINVAL);
        }
        /* S3 options only with an s3 store. */
        {
                struct csi_kv kv[] = {
                    {"store", "file:///srv"}, {"ref", "m:v1"}, {"region", "us-east-1"}};

                assert_int_equal(csi_context_parse(kv, 3, &ctx, why, sizeof(why)), -EINVAL);
        }
}

static void test_values(void **state)
{
        static const char *const good_sizes[] = {"64M", "1G", "65536k", "67108864", "2GiB", "100MB"};
        static const char *const bad_sizes[] = {
            "", "0", "0M", "-1", "1T", "512k", "1048576", "63M", "1M,allow_root", "1 M", "M", "1Mx", "9999999999999G"};
        static const char *const bad_regions[] = {"", "EU", "eu west", "eu\n", "a,b"};
        static const char *const bad_endpoints[] = {"s3://x", "http://u:p@h", "http://h/?q",
                                                    "host:9000", "http://h,x"};
        struct csi_context ctx;
        char why[512];

        (void)state;
        for (size_t i = 0; i < sizeof(good_sizes) / sizeof(good_sizes[0]); i++) {
                struct csi_kv kv[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"memory_limit", good_sizes[i]}};

                if (csi_context_parse(kv, 3, &ctx, why, sizeof(why)) != 0)
                        fail_msg("memory_limit '%s' refused: %s", good_sizes[i], why);
                csi_context_release(&ctx);
        }
        for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
                struct csi_kv kv[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"memory_limit", bad_sizes[i]}};

                if (csi_context_parse(kv, 3, &ctx, why, sizeof(why)) != -EINVAL)
                        fail_msg("memory_limit '%s' accepted", bad_sizes[i]);
        }
        for (size_t i = 0; i < sizeof(bad_regions) / sizeof(bad_regions[0]); i++) {
                struct csi_kv kv[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"region", bad_regions[i]}};

                if (csi_context_parse(kv, 3, &ctx, why, sizeof(why)) != -EINVAL)
                        fail_msg("region '%s' accepted", bad_regions[i]);
        }
        for (size_t i = 0; i < sizeof(bad_endpoints) / sizeof(bad_endpoints[0]); i++) {
                struct csi_kv kv[] = {
                    {"store", "s3://b"}, {"ref", "m:v1"}, {"endpoint", bad_endpoints[i]}};

                if (csi_context_parse(kv, 3, &ctx, why, sizeof(why)) != -EINVAL)
                        fail_msg("endpoint '%s' accepted", bad_endpoints[i]);
        }
}

static void test_cairnfs_arguments(void **state)
{
        struct csi_kv kv[] = {{"store", "file:///srv/st#ore"}, {"ref", "m:v1"}};
        struct csi_kv kv2[] = {
            {"store", "file:///srv/store"}, {"ref", "m:v1"}, {"memory_limit", "1G"}};
        struct csi_context ctx, ctx2;
        char why[512], *s;

        (void)state;
        /* '#' is refused: cairnfs splits its source at the last one. */
        assert_int_equal(csi_context_parse(kv, 2, &ctx, why, sizeof(why)), -EINVAL);
        kv[0].value = "file:///srv/store";
        assert_int_equal(csi_context_parse(kv, 2, &ctx, why, sizeof(why)), 0);
        assert_int_equal(csi_context_source(&ctx, &s), 0);
        assert_string_equal(s, "file:///srv/store#m:v1");
        free(s);
        assert_int_equal(csi_context_mount_options(&ctx, "/var/cache/cairn", &s), 0);
        assert_string_equal(s, "allow_other,cache_dir=/var/cache/cairn");
        free(s);
        assert_int_equal(csi_context_parse(kv2, 3, &ctx2, why, sizeof(why)), 0);
        assert_int_equal(csi_context_mount_options(&ctx2, "/c", &s), 0);
        assert_string_equal(s, "allow_other,cache_dir=/c,memory_limit=1G");
        free(s);
        assert_false(csi_context_equal(&ctx, &ctx2));
        assert_true(csi_context_equal(&ctx, &ctx));
        csi_context_release(&ctx2);

        /* prefetch: one of auto, all, none, handed to cairnfs as is. */
        struct csi_kv kv3[] = {{"store", "file:///s"}, {"ref", "m:v1"}, {"prefetch", "all"}};
        assert_int_equal(csi_context_parse(kv3, 3, &ctx2, why, sizeof(why)), 0);
        assert_int_equal(csi_context_mount_options(&ctx2, "/c", &s), 0);
        assert_string_equal(s, "allow_other,cache_dir=/c,prefetch=all");
        free(s);
        assert_false(csi_context_equal(&ctx, &ctx2));
        csi_context_release(&ctx2);
        kv3[2].value = "sometimes";
        assert_int_equal(csi_context_parse(kv3, 3, &ctx2, why, sizeof(why)), -EINVAL);
        assert_non_null(strstr(why, "prefetch"));
        assert_int_equal(csi_context_parse(kv, 2, &ctx2, why, sizeof(why)), 0);
        ctx2.ephemeral = true;
        assert_true(csi_context_equal(&ctx, &ctx2));
        csi_context_release(&ctx);
        csi_context_release(&ctx2);
}

static void test_secrets(void **state)
{
        struct csi_secrets s;
        char why[512];

        (void)state;
        {
                struct csi_kv kv[] = {{"AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"},
                                      {"AWS_SECRET_ACCESS_KEY", "canary-secret-value"},
                                      {"AWS_SESSION_TOKEN", "tok"}};

                assert_int_equal(csi_secrets_parse(kv, 3, &s, why, sizeof(why)), 0);
                assert_string_equal(s.access_key, "AKIAEXAMPLE");
                assert_string_equal(s.secret_key, "canary-secret-value");
                assert_string_equal(s.session_token, "tok");
                assert_false(csi_secrets_empty(&s));
                csi_secrets_release(&s);
                assert_null(s.secret_key);
        }
        {
                struct csi_kv kv[] = {{"aws_access_key_id", "A"}, {"aws_secret_access_key", "B"}};

                assert_int_equal(csi_secrets_parse(kv, 2, &s, why, sizeof(why)), 0);
                assert_null(s.session_token);
                csi_secrets_release(&s);
        }
        assert_int_equal(csi_secrets_parse(NULL, 0, &s, why, sizeof(why)), 0);
        assert_true(csi_secrets_empty(&s));
        {
                /* Half a key pair, unknown keys, values that would break the INI file. */
                struct csi_kv half[] = {{"AWS_ACCESS_KEY_ID", "A"}};
                struct csi_kv unknown[] = {{"canary-secret-value", "x"}};
                struct csi_kv newline[] = {{"AWS_ACCESS_KEY_ID", "A"},
                                           {"AWS_SECRET_ACCESS_KEY", "canary\n[evil]"}};
                struct csi_kv empty[] = {{"AWS_ACCESS_KEY_ID", ""}, {"AWS_SECRET_ACCESS_KEY", "B"}};
                struct csi_kv twice[] = {{"AWS_ACCESS_KEY_ID", "A"},
                                         {"aws_access_key_id", "A"},
                                         {"AWS_SECRET_ACCESS_KEY", "B"}};

                assert_int_equal(csi_secrets_parse(half, 1, &s, why, sizeof(why)), -EINVAL);
                assert_int_equal(csi_secrets_parse(unknown, 1, &s, why, sizeof(why)), -EINVAL);
                assert_null(strstr(why, "canary"));
                assert_int_equal(csi_secrets_parse(newline, 2, &s, why, sizeof(why)), -EINVAL);
                assert_null(strstr(why, "canary"));
                assert_int_equal(csi_secrets_parse(empty, 2, &s, why, sizeof(why)), -EINVAL);
                assert_int_equal(csi_secrets_parse(twice, 3, &s, why, sizeof(why)), -EINVAL);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_stores),  cmocka_unit_test(test_store_redacted),
            cmocka_unit_test(test_refs),    cmocka_unit_test(test_keys),
            cmocka_unit_test(test_values),  cmocka_unit_test(test_cairnfs_arguments),
            cmocka_unit_test(test_secrets),
        };
        return cmocka_run_group_tests_name("csi_context", tests, NULL, NULL);
}
