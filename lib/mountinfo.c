/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /proc/self/mountinfo, one line per mount:
 *   ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
 * Paths escape space, tab, newline and backslash as three octal digits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/mountinfo.h"

/* Undoes the octal escapes of a mountinfo path, in place. */
static void unescape(char *s)
{
        char *out = s;

        for (; *s; s++) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *out++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
                        s += 3;
                } else {
                        *out++ = *s;
                }
        }
        *out = '\0';
}

int cairn_mountinfo_parse(char *line, char **ret_mountpoint, struct cairn_mount_entry *ret_entry)
{
        char *fields[5], *save = NULL, *tok, *fstype = NULL;
        struct cairn_mount_entry e = {0};
        int i = 0;

        for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
                if (i < 5) {
                        fields[i++] = tok;
                } else if (strcmp(tok, "-") == 0) {
                        fstype = strtok_r(NULL, " \n", &save);
                        break;
                }
        }
        if (i < 5 || !fstype || sscanf(fields[2], "%u:%u", &e.major, &e.minor) != 2)
                return -EINVAL;
        snprintf(e.fstype, sizeof(e.fstype), "%s", fstype);
        unescape(fields[4]);
        *ret_mountpoint = fields[4];
        *ret_entry = e;
        return 0;
}

int cairn_mountinfo_find(const char *mountpoint, const char *fstype,
                         struct cairn_mount_entry *ret_entry)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        struct cairn_mount_entry e;
        char *line = NULL, *mp;
        size_t cap = 0;
        int found = 0;

        if (!f)
                return -errno;
        while (getline(&line, &cap, f) > 0) {
                if (cairn_mountinfo_parse(line, &mp, &e) < 0 || strcmp(mp, mountpoint) != 0)
                        continue;
                if (fstype && strcmp(e.fstype, fstype) != 0)
                        continue;
                *ret_entry = e;
                found = 1;
        }
        free(line);
        fclose(f);
        return found;
}
