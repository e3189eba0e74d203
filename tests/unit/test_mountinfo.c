/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mountinfo parsing: fields, optional fields before the separator, octal
 * escapes in the mount point, malformed lines; and a lookup in this
 * process's real mountinfo (the root is always mounted).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cairn/mountinfo.h"

static int parse(const char *text, char **mp, struct cairn_mount_entry *e, char *buf, size_t len)
{
        snprintf(buf, len, "%s", text);
        return cairn_mountinfo_parse(buf, mp, e);
}

static void test_parse_lines(void **state)
{
        (void)state;
        char buf[512], *mp;
        struct cairn_mount_entry e;

        assert_int_equal(parse("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 "
                               "/dev/root rw,errors=continue\n",
                               &mp, &e, buf, sizeof(buf)),
                         0);
        assert_string_equal(mp, "/mnt/parent");
        assert_string_equal(e.fstype, "ext3");
        assert_int_equal(e.major, 98);
        assert_int_equal(e.minor, 0);

        /* No optional fields; a mount point with a space, a tab and a backslash. */
        assert_int_equal(parse("512 30 0:61 / /var/a\\040b\\011c\\134d rw,nosuid - fuse.cairnfs "
                               "cairnfs rw,user_id=0",
                               &mp, &e, buf, sizeof(buf)),
                         0);
        assert_string_equal(mp, "/var/a b\tc\\d");
        assert_string_equal(e.fstype, "fuse.cairnfs");
        assert_int_equal(e.major, 0);
        assert_int_equal(e.minor, 61);

        /* Not an escape: left as it is. */
        assert_int_equal(parse("1 2 3:4 / /x\\9y rw - tmpfs t rw", &mp, &e, buf, sizeof(buf)), 0);
        assert_string_equal(mp, "/x\\9y");

        /* Malformed: too few fields, no separator, no type, a bad device. */
        assert_int_equal(parse("1 2 3:4 /", &mp, &e, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(parse("1 2 3:4 / /m rw shared:1", &mp, &e, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(parse("1 2 3:4 / /m rw -", &mp, &e, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(parse("1 2 dev / /m rw - ext4 /dev/x rw", &mp, &e, buf, sizeof(buf)),
                         -EINVAL);
        assert_int_equal(parse("", &mp, &e, buf, sizeof(buf)), -EINVAL);
}

static void test_find_root(void **state)
{
        (void)state;
        struct cairn_mount_entry e;

        assert_int_equal(cairn_mountinfo_find("/", NULL, &e), 1);
        assert_true(e.fstype[0] != '\0');
        /* Filtered by a type nothing has, and a path nothing is mounted on. */
        assert_int_equal(cairn_mountinfo_find("/", "no-such-fstype", &e), 0);
        assert_int_equal(cairn_mountinfo_find("/no/such/mount/point", NULL, &e), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_parse_lines),
            cmocka_unit_test(test_find_root),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
