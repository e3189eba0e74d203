/* SPDX-License-Identifier: Apache-2.0 */
/*
 * S3 configuration: which source wins (options, environment, the named
 * profile in the shared config and credentials files, defaults), the INI
 * dialect of those files as the AWS CLI reads them, the choice between
 * path-style and virtual-hosted addressing, and that no error message
 * ever contains a secret.  Every test runs with a private HOME and no
 * AWS_* variable but those it sets.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn/s3.h"

#define SECRET "s3cr3tKEY/with+chars=Zq9"
#define SECRET2 "an0therSECRETvalue/xyzzy"
#define TOKEN "FwoGZXIvYXdzEBYaDOSessionTokenValue//+=="

static const char *const aws_vars[] = {
        "AWS_ENDPOINT_URL",      "AWS_ENDPOINT_URL_S3",         "AWS_REGION",
        "AWS_DEFAULT_REGION",    "AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",     "AWS_PROFILE",                 "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
};

static char home[256];

static void write_file(const char *rel, const char *text)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", home, rel);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
        assert_int_equal(fclose(f), 0);
}

static void remove_file(const char *rel)
{
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", home, rel);
        unlink(path);
}

static int setup(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(aws_vars) / sizeof(aws_vars[0]); i++)
                unsetenv(aws_vars[i]);
        snprintf(home, sizeof(home), "/tmp/test_s3_config.XXXXXX");
        if (!mkdtemp(home))
                return -1;
        char aws[300];
        snprintf(aws, sizeof(aws), "%s/.aws", home);
        if (mkdir(aws, 0700) < 0)
                return -1;
        setenv("HOME", home, 1);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        static const char *const files[] = {".aws/config", ".aws/credentials", "creds-elsewhere",
                                            "config-elsewhere", "big"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
                remove_file(files[i]);
        char aws[300];
        snprintf(aws, sizeof(aws), "%s/.aws", home);
        rmdir(aws);
        rmdir(home);
        return 0;
}

/* Loads with opts; on failure checks that the message is one line without a secret. */
static int load(const struct cairn_store_options *opts, struct cairn_s3_config *c, char *err,
                size_t errlen)
{
        memset(c, 0, sizeof(*c));
        err[0] = '\0';
        int r = cairn_s3_config_load(opts, c, err, errlen);
        if (r < 0) {
                assert_non_null(strchr(err, '\0'));
                assert_true(err[0] != '\0');
                assert_null(strchr(err, '\n'));
                assert_null(strstr(err, SECRET));
                assert_null(strstr(err, SECRET2));
                assert_null(strstr(err, TOKEN));
                assert_null(c->secret_key);
        }
        return r;
}

static void test_defaults_anonymous(void **state)
{
        struct cairn_s3_config c;
        char err[256];
        (void)state;

        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert_string_equal(c.region, "us-east-1");
        assert_null(c.access_key);
        assert_null(c.secret_key);
        assert_null(c.session_token);
        assert_false(c.path_style);
        cairn_s3_config_release(&c);
        assert_null(c.endpoint);
        cairn_s3_config_release(&c); /* twice is harmless */
}

static void test_environment(void **state)
{
        struct cairn_s3_config c;
        char err[256];
        (void)state;

        setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
        setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
        setenv("AWS_SESSION_TOKEN", TOKEN, 1);
        setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDEXAMPLE");
        assert_string_equal(c.secret_key, SECRET);
        assert_string_equal(c.session_token, TOKEN);
        assert_string_equal(c.region, "eu-west-1");
        assert_string_equal(c.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_false(c.path_style);
        cairn_s3_config_release(&c);

        /* AWS_REGION beats AWS_DEFAULT_REGION; the option beats both. */
        setenv("AWS_REGION", "ap-south-1", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.region, "ap-south-1");
        cairn_s3_config_release(&c);
        struct cairn_store_options o = {.region = "sa-east-1"};
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_string_equal(c.region, "sa-east-1");
        cairn_s3_config_release(&c);

        /* An empty variable counts as unset. */
        setenv("AWS_REGION", "", 1);
        setenv("AWS_SESSION_TOKEN", "", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.region, "eu-west-1");
        assert_null(c.session_token);
        cairn_s3_config_release(&c);

        /* Anonymous wins over configured credentials. */
        o = (struct cairn_store_options){.anonymous = true};
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_null(c.access_key);
        assert_null(c.secret_key);
        cairn_s3_config_release(&c);

        /* Half a key pair is a mistake worth saying, without the half that is there. */
        unsetenv("AWS_ACCESS_KEY_ID");
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
        setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
        unsetenv("AWS_SECRET_ACCESS_KEY");
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));

        /* Credentials end up in HTTP headers: no control characters, no spaces. */
        setenv("AWS_SECRET_ACCESS_KEY", SECRET "\r\nX-Evil: 1", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
        setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
        setenv("AWS_SESSION_TOKEN", TOKEN " x", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
}

static void test_endpoint_and_addressing(void **state)
{
        struct cairn_s3_config c;
        struct cairn_store_options o = {0};
        char err[256];
        (void)state;

        /* A custom endpoint: path style; the trailing slash goes. */
        setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.endpoint, "http://127.0.0.1:9000");
        assert_true(c.path_style);
        cairn_s3_config_release(&c);

        /* The S3-specific variable beats the generic one, the option beats both. */
        setenv("AWS_ENDPOINT_URL_S3", "https://minio.example.com", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.endpoint, "https://minio.example.com");
        assert_true(c.path_style);
        cairn_s3_config_release(&c);
        o.endpoint = "http://[::1]:8080";
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_string_equal(c.endpoint, "http://[::1]:8080");
        cairn_s3_config_release(&c);

        /* An AWS endpoint given explicitly is still AWS: virtual-hosted. */
        o.endpoint = "https://s3.eu-central-1.amazonaws.com";
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_false(c.path_style);
        cairn_s3_config_release(&c);

        /* The option decides against the automatic choice, both ways. */
        o.addressing = CAIRN_S3_ADDRESSING_PATH;
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_true(c.path_style);
        cairn_s3_config_release(&c);
        o.endpoint = "http://localhost:9000";
        o.addressing = CAIRN_S3_ADDRESSING_VIRTUAL;
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_false(c.path_style);
        cairn_s3_config_release(&c);

        /* Malformed endpoints; user info never reaches a message. */
        static const char *const bad[] = {
                "ftp://host",
                "host:9000",
                "http://",
                "http://host/path",
                "http://host:0",
                "http://host:65536",
                "http://host:12a",
                "http://host:",
                "http://user:" SECRET "@host",
                "http://host?x=1",
                "http://[::1",
                "http://[]:80",
                "http://ho st",
        };
        o = (struct cairn_store_options){0};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                o.endpoint = bad[i];
                if (load(&o, &c, err, sizeof(err)) != -EINVAL)
                        fail_msg("accepted endpoint '%s'", bad[i]);
                assert_non_null(strstr(err, "--endpoint"));
                cairn_s3_config_release(&c);
        }
        o.endpoint = NULL;
        setenv("AWS_ENDPOINT_URL_S3", "s3.example.com", 1);
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "AWS_ENDPOINT_URL_S3"));

        /* Regions become host names: nothing else gets in. */
        unsetenv("AWS_ENDPOINT_URL_S3");
        o.region = "us-east-1.evil.com/";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EINVAL);
}

static void test_profiles(void **state)
{
        struct cairn_s3_config c;
        struct cairn_store_options o = {0};
        char err[256];
        (void)state;

        write_file(".aws/credentials",
                   "# shared credentials\n"
                   "[default]\n"
                   "aws_access_key_id = AKIDDEFAULT\n"
                   "aws_secret_access_key = " SECRET "\n"
                   "\n"
                   "[work]\n"
                   "aws_access_key_id=AKIDWORK\n"
                   "aws_secret_access_key=" SECRET2 "\n"
                   "aws_session_token =" TOKEN "\n"
                   "[profile work]\n"
                   "aws_access_key_id = NOT-THIS-ONE\n");
        write_file(".aws/config",
                   "[default]\n"
                   "region = eu-north-1\n"
                   "[work]\n"
                   "region = not-this-one\n"
                   "[profile work]\n"
                   "region = us-west-2\n"
                   "endpoint_url = http://localhost:7070\n"
                   "aws_access_key_id = AKIDFROMCONFIG\n"
                   "[profile vhost]\n"
                   "endpoint_url = http://s3.local:7070\n"
                   "s3 =\n"
                   "  addressing_style = virtual\n"
                   "aws_access_key_id = AKIDVHOST\n"
                   "aws_secret_access_key = " SECRET "\n");

        /* The default profile. */
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDDEFAULT");
        assert_string_equal(c.secret_key, SECRET);
        assert_null(c.session_token);
        assert_string_equal(c.region, "eu-north-1");
        assert_string_equal(c.endpoint, "https://s3.eu-north-1.amazonaws.com");
        cairn_s3_config_release(&c);

        /* AWS_PROFILE: "[work]" in credentials, "[profile work]" in config; credentials win. */
        setenv("AWS_PROFILE", "work", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDWORK");
        assert_string_equal(c.secret_key, SECRET2);
        assert_string_equal(c.session_token, TOKEN);
        assert_string_equal(c.region, "us-west-2");
        assert_string_equal(c.endpoint, "http://localhost:7070");
        assert_true(c.path_style);
        cairn_s3_config_release(&c);

        /* The environment's credentials beat AWS_PROFILE's; its region still applies. */
        setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
        setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDENV");
        assert_null(c.session_token);
        assert_string_equal(c.region, "us-west-2");
        cairn_s3_config_release(&c);

        /* An explicit profile option beats the environment, as `aws --profile` does. */
        o.profile = "vhost";
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDVHOST");
        assert_string_equal(c.endpoint, "http://s3.local:7070");
        assert_false(c.path_style); /* the profile's s3 addressing_style */
        cairn_s3_config_release(&c);
        o.addressing = CAIRN_S3_ADDRESSING_PATH;
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_true(c.path_style);
        cairn_s3_config_release(&c);

        /* Environment endpoint and region beat the profile's. */
        setenv("AWS_ENDPOINT_URL", "http://10.0.0.1:9000", 1);
        setenv("AWS_REGION", "me-south-1", 1);
        assert_int_equal(load(&o, &c, err, sizeof(err)), 0);
        assert_string_equal(c.endpoint, "http://10.0.0.1:9000");
        assert_string_equal(c.region, "me-south-1");
        cairn_s3_config_release(&c);

        /* A named profile that does not exist is an error, not anonymous access. */
        o.profile = "nope";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "'nope'"));
        o.profile = NULL;
        unsetenv("AWS_ACCESS_KEY_ID");
        unsetenv("AWS_SECRET_ACCESS_KEY");
        setenv("AWS_PROFILE", "missing", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "AWS_PROFILE"));
        o.profile = "bad]name";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EINVAL);
}

static void test_profile_problems(void **state)
{
        struct cairn_s3_config c;
        struct cairn_store_options o = {0};
        char err[256];
        (void)state;

        write_file(".aws/credentials", "[half]\naws_secret_access_key = " SECRET "\n"
                                       "[role]\nrole_arn = arn:aws:iam::1:role/x\n"
                                       "source_profile = default\n"
                                       "[style]\naws_access_key_id = A\n"
                                       "aws_secret_access_key = " SECRET "\n");
        write_file(".aws/config", "[profile style]\ns3 =\n    addressing_style = sideways\n");
        o.profile = "half";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "aws_access_key_id"));
        o.profile = "role";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EOPNOTSUPP);
        assert_non_null(strstr(err, "role_arn"));
        o.profile = "style";
        assert_int_equal(load(&o, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "addressing_style"));

        /* A malformed file names the file, never its content. */
        write_file(".aws/credentials", "[default\naws_secret_access_key = " SECRET "\n");
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, ".aws/credentials"));
        remove_file(".aws/credentials");

        /* Files elsewhere, through the variables; "~/" is the home directory. */
        write_file("creds-elsewhere", "[default]\naws_access_key_id = AKIDELSEWHERE\n"
                                      "aws_secret_access_key = " SECRET "\n");
        write_file("config-elsewhere", "[default]\nregion = af-south-1\n");
        setenv("AWS_SHARED_CREDENTIALS_FILE", "~/creds-elsewhere", 1);
        char path[512];
        snprintf(path, sizeof(path), "%s/config-elsewhere", home);
        setenv("AWS_CONFIG_FILE", path, 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_string_equal(c.access_key, "AKIDELSEWHERE");
        assert_string_equal(c.region, "af-south-1");
        cairn_s3_config_release(&c);

        /* Named files that are missing are like no file. */
        setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), 0);
        assert_null(c.access_key);
        cairn_s3_config_release(&c);

        /* Over 1 MiB: refused, not parsed. */
        char *big = malloc((2u << 20) + 1);
        assert_non_null(big);
        memset(big, '#', 2u << 20);
        big[2u << 20] = '\0';
        write_file("big", big);
        free(big);
        snprintf(path, sizeof(path), "%s/big", home);
        setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EFBIG);
        assert_non_null(strstr(err, "1 MiB"));
        /* A directory is not a credentials file. */
        setenv("AWS_SHARED_CREDENTIALS_FILE", home, 1);
        assert_int_equal(load(NULL, &c, err, sizeof(err)), -EINVAL);
}

/* ---- the INI parser itself ---- */

struct kv {
        char text[4096];
        size_t len;
        unsigned calls;
};

static void collect(const char *key, const char *value, void *ctx)
{
        struct kv *kv = ctx;
        kv->len += (size_t)snprintf(kv->text + kv->len, sizeof(kv->text) - kv->len, "%s=%s;", key,
                                    value);
        kv->calls++;
}

static int ini(const char *text, const char *profile, bool config_file, struct kv *kv)
{
        memset(kv, 0, sizeof(*kv));
        /* Exactly sized, not NUL-terminated: the parser must honour len. */
        size_t len = strlen(text);
        char *p = malloc(len ? len : 1);
        assert_non_null(p);
        memcpy(p, text, len);
        int r = cairn_s3_ini_parse(p, len, profile, config_file, collect, kv);
        free(p);
        return r;
}

static void test_ini_dialect(void **state)
{
        struct kv kv;
        (void)state;

        /* Comments, blanks, ':' as a separator, case-insensitive keys, verbatim values. */
        assert_int_equal(ini("; top comment\n"
                             "[default]\r\n"
                             "  # indented comment\n"
                             "Region : eu-west-3\r\n"
                             "aws_ACCESS_key_id\t=\tAKID  \n"
                             "key = value # not a comment = really\n"
                             "empty =\n"
                             "url = http://h:1/?a=b\n"
                             "[other]\n"
                             "region = no\n"
                             "[default]\n"
                             "later = yes",
                             "default", false, &kv),
                         1);
        assert_string_equal(kv.text, "region=eu-west-3;aws_access_key_id=AKID;"
                                     "key=value # not a comment = really;url=http://h:1/?a=b;"
                                     "later=yes;");

        /* Config file: "[profile NAME]" with any blanks, "[default]", "[profile default]". */
        assert_int_equal(ini("[profile   dev] ; comment\nregion = a\n[dev]\nregion = b\n"
                             "[ profile dev ]\nx = 1\n",
                             "dev", true, &kv),
                         1);
        assert_string_equal(kv.text, "region=a;x=1;");
        assert_int_equal(ini("[profile default]\na = 1\n[default]\nb = 2\n", "default", true, &kv),
                         1);
        assert_string_equal(kv.text, "a=1;b=2;");
        /* In the credentials file "[profile dev]" is a profile named "profile dev". */
        assert_int_equal(ini("[profile dev]\na = 1\n", "dev", false, &kv), 0);
        assert_int_equal(kv.calls, 0);
        assert_int_equal(ini("[profile dev]\na = 1\n", "profile dev", false, &kv), 1);
        assert_string_equal(kv.text, "a=1;");

        /* Nested blocks and continuation lines. */
        assert_int_equal(ini("[default]\n"
                             "s3 =\n"
                             "    addressing_style = path\n"
                             "    Endpoint_URL = http://x:1\n"
                             "region = r1\n"
                             "  continued line of region\n"
                             "  still = continued\n"
                             "s3=\n"
                             "\n"
                             "  max_concurrent_requests = 20\n"
                             "[other]\n"
                             "  first = indented\n",
                             "default", false, &kv),
                         1);
        assert_string_equal(kv.text, "s3.addressing_style=path;s3.endpoint_url=http://x:1;"
                                     "region=r1;s3.max_concurrent_requests=20;");

        /* Found or not found, and nothing reported from other sections. */
        assert_int_equal(ini("", "default", false, &kv), 0);
        assert_int_equal(ini("\n\n# only comments\n", "default", false, &kv), 0);
        assert_int_equal(ini("[a]\nx=1\n", "default", false, &kv), 0);
        assert_int_equal(kv.calls, 0);
        assert_int_equal(ini("[default]", "default", false, &kv), 1);
        assert_int_equal(kv.calls, 0);
}

static void test_ini_malformed(void **state)
{
        struct kv kv;
        static const char *const bad[] = {
                "key = before any section\n[default]\n",
                "[default]\nno separator here\n",
                "[default]\n= no key\n",
                "[default\nx = 1\n",
                "[]\n",
                "[  ]\n",
                "[default] junk\n",
                "[default]\nx = 1\n[unclosed",
        };
        (void)state;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (ini(bad[i], "default", false, &kv) != -EINVAL)
                        fail_msg("accepted: %s", bad[i]);
        }
        /* An embedded NUL would let a C string end early: refused. */
        static const char nul[] = "[default]\nx = 1\0\ny = 2\n";
        assert_int_equal(cairn_s3_ini_parse(nul, sizeof(nul) - 1, "default", false, collect, &kv),
                         -EINVAL);
        assert_int_equal(cairn_s3_ini_parse("", (1u << 20) + 1, "default", false, collect, &kv),
                         -EFBIG);
        assert_int_equal(cairn_s3_ini_parse("", 0, NULL, false, collect, &kv), -EINVAL);

        /* Keys longer than any AWS setting are skipped, not an error. */
        char text[600];
        snprintf(text, sizeof(text), "[default]\n%0300d = 1\nregion = r\n", 0);
        assert_int_equal(ini(text, "default", false, &kv), 1);
        assert_string_equal(kv.text, "region=r;");
}

static void test_region_names(void **state)
{
        (void)state;
        static const char *const good[] = {"us-east-1", "eu-west-3", "cn_north_1", "X", "a0"};
        static const char *const bad[] = {"", "us east 1", "us-east-1.evil.com", "a/b", "r\n",
                                          "caf\xc3\xa9"};
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                assert_true(cairn_s3_region_valid(good[i]));
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_false(cairn_s3_region_valid(bad[i]));
        char longest[66];
        memset(longest, 'a', 64);
        longest[64] = '\0';
        assert_true(cairn_s3_region_valid(longest));
        longest[64] = 'a';
        longest[65] = '\0';
        assert_false(cairn_s3_region_valid(longest));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_region_names),
                cmocka_unit_test_setup_teardown(test_defaults_anonymous, setup, teardown),
                cmocka_unit_test_setup_teardown(test_environment, setup, teardown),
                cmocka_unit_test_setup_teardown(test_endpoint_and_addressing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_profiles, setup, teardown),
                cmocka_unit_test_setup_teardown(test_profile_problems, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ini_dialect, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ini_malformed, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
