/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state directory of cairn-csi (csi/csi_state.c) and its credentials
 * files (csi/csi_secrets.c).  Records are read back by a restarted plugin
 * to re-adopt mounts, so they must round-trip any volume id and path
 * (newlines, '%', '=' included), and a torn, foreign or tampered file must
 * be refused rather than half-used.  Credentials files must be 0600 in a
 * 0700 directory and disappear completely.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
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

#include "csi_secrets.h"
#include "csi_state.h"

static void test_round_trip(void **state)
{
        struct csi_record rec = {
            .kind = CSI_RECORD_STAGE,
            .volume_id = "vol\n%41=x\x01 \x7f",
            .path = "/k/plugins/a b/%/globalmount",
            .ctx = {.store = "s3://bucket/p",
                    .ref = "m:v1",
                    .memory_limit = "1G",
                    .region = "eu-west-1",
                    .endpoint = "http://127.0.0.1:9000"},
        };
        struct csi_record back;
        char *text;

        (void)state;
        assert_int_equal(csi_record_format(&rec, &text), 0);
        /* One line per field: the newline in the id is escaped. */
        assert_null(strstr(text, "vol\n"));
        assert_int_equal(csi_record_parse(text, strlen(text), &back), 0);
        assert_int_equal(back.kind, CSI_RECORD_STAGE);
        assert_string_equal(back.volume_id, rec.volume_id);
        assert_string_equal(back.path, rec.path);
        assert_null(back.staging_path);
        assert_true(csi_context_equal(&back.ctx, &rec.ctx));
        assert_false(back.ctx.ephemeral);
        csi_record_release(&back);
        free(text);

        /* A bind publish names its staging path and no volume. */
        rec = (struct csi_record){
            .kind = CSI_RECORD_PUBLISH, .volume_id = "v", .path = "/k/t", .staging_path = "/k/s"};
        assert_int_equal(csi_record_format(&rec, &text), 0);
        assert_int_equal(csi_record_parse(text, strlen(text), &back), 0);
        assert_string_equal(back.staging_path, "/k/s");
        assert_null(back.ctx.store);
        csi_record_release(&back);
        free(text);

        /* An ephemeral publish names its volume. */
        rec = (struct csi_record){.kind = CSI_RECORD_PUBLISH,
                                  .volume_id = "v",
                                  .path = "/k/t",
                                  .ctx = {.store = "file:///s", .ref = "m:v1", .ephemeral = true}};
        assert_int_equal(csi_record_format(&rec, &text), 0);
        assert_int_equal(csi_record_parse(text, strlen(text), &back), 0);
        assert_true(back.ctx.ephemeral);
        assert_string_equal(back.ctx.store, "file:///s");
        csi_record_release(&back);
        free(text);
}

static void test_parse_rejects(void **state)
{
        static const char *const bad[] = {
            "",
            "kind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1\n", /* no version */
            "version=2\nkind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1",
            "version=1\nkind=other\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=BAD\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstore=ftp://s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\nvolume_id=w\npath=/k/s\nstore=file:///s\n"
            "ref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1\n"
            "secret=x\n",
            "version=1\nkind=stage\nvolume_id=v%0\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v%zz\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v%00\npath=/k/s\nstore=file:///s\nref=m:v1\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstaging_path=/k/x\n"
            "store=file:///s\nref=m:v1\n",
            "version=1\nkind=publish\nvolume_id=v\npath=/k/t\nstaging_path=/k/s\n"
            "store=file:///s\nref=m:v1\n",
            "version=1\nkind=publish\nvolume_id=v\npath=/k/t\n",
            "version=1\nkind=stage\nvolume_id=v\npath=/k/s\nstore=file:///s\nref=m:v1\n"
            "ephemeral=maybe\n",
            "version=1\nkind=stage\nnot a key value line\n",
        };
        struct csi_record rec;

        (void)state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (csi_record_parse(bad[i], strlen(bad[i]), &rec) != -EINVAL)
                        fail_msg("record %zu accepted:\n%s", i, bad[i]);
        /* An embedded NUL. */
        assert_int_equal(csi_record_parse("version=1\n\0", 11, &rec), -EINVAL);
}

static char tmpdir[64];

static int setup_dir(void **state)
{
        (void)state;
        strcpy(tmpdir, "/tmp/test_csi_state.XXXXXX");
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
        char cmd[128];

        (void)state;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

static int count(const struct csi_record *rec, void *userdata)
{
        (void)rec;
        (*(int *)userdata)++;
        return 0;
}

static int stop_at_first(const struct csi_record *rec, void *userdata)
{
        (void)rec;
        (void)userdata;
        return 42;
}

static void test_directory(void **state)
{
        struct csi_record rec = {.kind = CSI_RECORD_STAGE,
                                 .volume_id = "vol-1",
                                 .path = "/k/plugins/vol-1/globalmount",
                                 .ctx = {.store = "file:///s", .ref = "m:v1"}};
        struct csi_record pub = {.kind = CSI_RECORD_PUBLISH,
                                 .volume_id = "vol-1",
                                 .path = "/k/pods/p/mount",
                                 .staging_path = "/k/plugins/vol-1/globalmount"};
        struct csi_record back;
        struct csi_state *st;
        char dir[PATH_MAX], file[PATH_MAX * 2];
        struct stat sb;
        int n = 0;
        FILE *f;

        (void)state;
        snprintf(dir, sizeof(dir), "%s/state", tmpdir);
        assert_int_equal(csi_state_open(dir, &st), 0);
        assert_int_equal(stat(dir, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0700);
        assert_int_equal(csi_state_load(st, CSI_RECORD_STAGE, rec.path, &back), -ENOENT);
        assert_int_equal(csi_state_save(st, &rec), 0);
        assert_int_equal(csi_state_save(st, &pub), 0);
        /* Saving again replaces. */
        rec.ctx.memory_limit = "1G";
        assert_int_equal(csi_state_save(st, &rec), 0);
        assert_int_equal(csi_state_load(st, CSI_RECORD_STAGE, rec.path, &back), 0);
        assert_string_equal(back.volume_id, "vol-1");
        assert_string_equal(back.ctx.memory_limit, "1G");
        csi_record_release(&back);
        /* Kinds are separate namespaces. */
        assert_int_equal(csi_state_load(st, CSI_RECORD_PUBLISH, rec.path, &back), -ENOENT);
        assert_int_equal(csi_state_load(st, CSI_RECORD_PUBLISH, pub.path, &back), 0);
        csi_record_release(&back);
        assert_int_equal(csi_state_foreach(st, CSI_RECORD_STAGE, count, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(csi_state_foreach(st, CSI_RECORD_PUBLISH, stop_at_first, NULL), 42);

        /* A garbage file in the directory is skipped, not fatal. */
        snprintf(file, sizeof(file), "%s/stage/garbage", dir);
        f = fopen(file, "w");
        assert_non_null(f);
        fputs("not a record", f);
        fclose(f);
        n = 0;
        assert_int_equal(csi_state_foreach(st, CSI_RECORD_STAGE, count, &n), 0);
        assert_int_equal(n, 1);

        /* A record stored under another path's name is not that path's. */
        {
                struct csi_record other = rec;
                char stage[PATH_MAX + 8], of[PATH_MAX * 2] = "", rf[PATH_MAX * 2] = "";
                struct dirent *de;
                DIR *d;

                other.path = "/k/other";
                assert_int_equal(csi_state_save(st, &other), 0);
                snprintf(stage, sizeof(stage), "%s/stage", dir);
                d = opendir(stage);
                assert_non_null(d);
                while ((de = readdir(d))) {
                        char name[PATH_MAX * 2], text[4096];
                        size_t len;

                        if (de->d_name[0] == '.' || strcmp(de->d_name, "garbage") == 0)
                                continue;
                        snprintf(name, sizeof(name), "%s/%s", stage, de->d_name);
                        f = fopen(name, "r");
                        assert_non_null(f);
                        len = fread(text, 1, sizeof(text) - 1, f);
                        text[len] = '\0';
                        fclose(f);
                        strcpy(strstr(text, "path=/k/other\n") ? of : rf, name);
                }
                closedir(d);
                assert_true(of[0] && rf[0]);
                assert_int_equal(rename(of, rf), 0);
                assert_int_equal(csi_state_load(st, CSI_RECORD_STAGE, rec.path, &back), -EINVAL);
                assert_int_equal(csi_state_remove(st, CSI_RECORD_STAGE, rec.path), 0);
                assert_int_equal(csi_state_load(st, CSI_RECORD_STAGE, rec.path, &back), -ENOENT);
                assert_int_equal(csi_state_save(st, &other), 0);
        }

        assert_int_equal(csi_state_remove(st, CSI_RECORD_PUBLISH, pub.path), 0);
        assert_int_equal(csi_state_remove(st, CSI_RECORD_PUBLISH, pub.path), 0);
        assert_int_equal(csi_state_load(st, CSI_RECORD_PUBLISH, pub.path, &back), -ENOENT);
        csi_state_free(st);

        /* Reopened (a restarted plugin): what was saved is there. */
        assert_int_equal(csi_state_open(dir, &st), 0);
        assert_int_equal(csi_state_load(st, CSI_RECORD_STAGE, "/k/other", &back), 0);
        assert_string_equal(back.path, "/k/other");
        csi_record_release(&back);
        csi_state_free(st);
}

static void test_secrets_files(void **state)
{
        struct csi_secrets s = {
            .access_key = "AKIA", .secret_key = "canary-secret", .session_token = "tok"};
        struct csi_context ctx = {.store = "s3://b",
                                  .ref = "m:v1",
                                  .region = "eu-west-1",
                                  .endpoint = "http://127.0.0.1:9000"};
        char parent[PATH_MAX], path[PATH_MAX * 2], buf[512];
        struct stat sb;
        char *dir = NULL;
        size_t n;
        FILE *f;

        (void)state;
        snprintf(parent, sizeof(parent), "%s/secrets", tmpdir);
        assert_int_equal(csi_secrets_write(parent, &s, &ctx, &dir), 0);
        assert_int_equal(stat(dir, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0700);
        snprintf(path, sizeof(path), "%s/credentials", dir);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        f = fopen(path, "r");
        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        assert_string_equal(buf, "[default]\naws_access_key_id = AKIA\n"
                                 "aws_secret_access_key = canary-secret\n"
                                 "aws_session_token = tok\n");
        snprintf(path, sizeof(path), "%s/config", dir);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        f = fopen(path, "r");
        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        assert_string_equal(buf, "[default]\nregion = eu-west-1\n"
                                 "endpoint_url = http://127.0.0.1:9000\n");
        assert_int_equal(csi_secrets_remove(dir), 0);
        assert_int_equal(stat(dir, &sb), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(csi_secrets_remove(dir), 0);
        free(dir);

        /* Anonymous: an empty profile, so nothing else on the node is used. */
        assert_int_equal(csi_secrets_write(parent, NULL, &ctx, &dir), 0);
        snprintf(path, sizeof(path), "%s/credentials", dir);
        f = fopen(path, "r");
        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        assert_string_equal(buf, "[default]\n");
        free(dir);
        /* Leftovers of a crash are swept. */
        csi_secrets_cleanup(parent);
        snprintf(path, sizeof(path), "rmdir '%s'", parent);
        assert_int_equal(system(path), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_round_trip),
            cmocka_unit_test(test_parse_rejects),
            cmocka_unit_test_setup_teardown(test_directory, setup_dir, teardown_dir),
            cmocka_unit_test_setup_teardown(test_secrets_files, setup_dir, teardown_dir),
        };
        return cmocka_run_group_tests_name("csi_state", tests, NULL, NULL);
}
