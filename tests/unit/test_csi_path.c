/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Path checks of cairn-csi (csi/csi_path.c): the paths in CSI requests end
 * up in mount(2) and umount(2) as root.  Lexically, anything relative,
 * unclean (empty, "." or ".." components, trailing '/'), with control
 * characters, or outside the kubelet directory (including the kubelet
 * directory itself and a sibling sharing its prefix) is refused.  On the
 * filesystem, a symlink anywhere below the kubelet directory, as an
 * intermediate component or as the last one, is refused, and missing
 * paths are reported as such, not as errors.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "csi_path.h"

static void test_lexical(void **state)
{
        static const char *const good[] = {
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount",
            "/var/lib/kubelet/x",
            "/var/lib/kubelet/plugins/kubernetes.io/csi/cairn.csi.dev/abc/globalmount",
            "/var/lib/kubelet/a..b/.hidden/...",
        };
        static const char *const bad[] = {
            "",
            "relative/path",
            "var/lib/kubelet/x",
            "/var/lib/kubelet",
            "/var/lib/kubelet/",
            "/var/lib/kubeletx/pods",
            "/var/lib/kubelet/../../etc",
            "/var/lib/kubelet/pods/..",
            "/var/lib/kubelet/pods/../../../etc/passwd",
            "/var/lib/kubelet/./pods",
            "/var/lib/kubelet/pods/.",
            "/var/lib/kubelet//pods",
            "/var/lib/kubelet/pods/",
            "/var/lib/kubelet/po\nds",
            "/var/lib/kubelet/po\177ds",
            "/etc/passwd",
            "/",
            "/var/lib/kube",
        };
        char why[256];

        (void)state;
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                if (csi_path_check_lexical(good[i], "/var/lib/kubelet", why, sizeof(why)) != 0)
                        fail_msg("'%s' refused: %s", good[i], why);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                why[0] = '\0';
                if (csi_path_check_lexical(bad[i], "/var/lib/kubelet", why, sizeof(why)) != -EINVAL)
                        fail_msg("'%s' accepted", bad[i]);
                assert_true(why[0] != '\0');
        }
}

static void test_lexical_long(void **state)
{
        char *p = malloc(PATH_MAX + 16);
        char why[256];

        (void)state;
        assert_non_null(p);
        strcpy(p, "/k/");
        memset(p + 3, 'a', PATH_MAX);
        p[PATH_MAX + 3] = '\0';
        assert_int_equal(csi_path_check_lexical(p, "/k", why, sizeof(why)), -EINVAL);
        free(p);
}

struct tree {
        char root[64];
};

/* root/a/b (dirs), root/file, root/link -> root/a, root/a/blink -> /tmp */
static int setup_tree(void **state)
{
        struct tree *t = calloc(1, sizeof(*t));
        char p[PATH_MAX];

        if (!t)
                return -1;
        strcpy(t->root, "/tmp/test_csi_path.XXXXXX");
        if (!mkdtemp(t->root))
                return -1;
        snprintf(p, sizeof(p), "%s/a", t->root);
        mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/a/b", t->root);
        mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/file", t->root);
        fclose(fopen(p, "w"));
        snprintf(p, sizeof(p), "%s/link", t->root);
        if (symlink("a", p) < 0)
                return -1;
        snprintf(p, sizeof(p), "%s/a/blink", t->root);
        if (symlink("/tmp", p) < 0)
                return -1;
        *state = t;
        return 0;
}

static int teardown_tree(void **state)
{
        struct tree *t = *state;
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->root);
        if (system(cmd) != 0)
                return -1;
        free(t);
        return 0;
}

static int check(const struct tree *t, const char *rel, enum csi_path_state *st)
{
        char path[PATH_MAX], why[256];

        snprintf(path, sizeof(path), "%s/%s", t->root, rel);
        return csi_path_check(path, t->root, st, why, sizeof(why));
}

static void test_walk(void **state)
{
        const struct tree *t = *state;
        enum csi_path_state st = CSI_PATH_DEAD_MOUNT;

        assert_int_equal(check(t, "a", &st), 0);
        assert_int_equal(st, CSI_PATH_DIR);
        assert_int_equal(check(t, "a/b", &st), 0);
        assert_int_equal(st, CSI_PATH_DIR);
        assert_int_equal(check(t, "a/b/new", &st), 0);
        assert_int_equal(st, CSI_PATH_MISSING);
        assert_int_equal(check(t, "a/missing/new", &st), 0);
        assert_int_equal(st, CSI_PATH_NO_PARENT);
        assert_int_equal(check(t, "missing/x/y", &st), 0);
        assert_int_equal(st, CSI_PATH_NO_PARENT);

        st = CSI_PATH_DIR;
        /* Symlinks: as the last component, in the middle, pointing inside or out. */
        assert_int_equal(check(t, "link", &st), -EINVAL);
        assert_int_equal(check(t, "link/b", &st), -EINVAL);
        assert_int_equal(check(t, "link/b/new", &st), -EINVAL);
        assert_int_equal(check(t, "a/blink", &st), -EINVAL);
        assert_int_equal(check(t, "a/blink/x", &st), -EINVAL);
        /* A file is no mount point and no directory to walk through. */
        assert_int_equal(check(t, "file", &st), -EINVAL);
        assert_int_equal(check(t, "file/x", &st), -EINVAL);
        /* Failures leave the state alone. */
        assert_int_equal(st, CSI_PATH_DIR);
}

static void test_walk_reason(void **state)
{
        const struct tree *t = *state;
        enum csi_path_state st;
        char path[PATH_MAX], why[256] = "";

        snprintf(path, sizeof(path), "%s/link/b", t->root);
        assert_int_equal(csi_path_check(path, t->root, &st, why, sizeof(why)), -EINVAL);
        assert_non_null(strstr(why, "symlink"));
        snprintf(path, sizeof(path), "%s/a/../a", t->root);
        assert_int_equal(csi_path_check(path, t->root, &st, why, sizeof(why)), -EINVAL);
        assert_non_null(strstr(why, ".."));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_lexical),
            cmocka_unit_test(test_lexical_long),
            cmocka_unit_test_setup_teardown(test_walk, setup_tree, teardown_tree),
            cmocka_unit_test_setup_teardown(test_walk_reason, setup_tree, teardown_tree),
        };
        return cmocka_run_group_tests_name("csi_path", tests, NULL, NULL);
}
