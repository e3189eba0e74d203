/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict number and size parsing shared by every front: the CLI's flags,
 * cairnfs's -o options and the CSI plugin's volume_context all take the
 * same sizes, so they must all accept and refuse exactly the same text.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <strings.h>

#include "cairn/parse.h"

/*
 * strtoull() accepts leading whitespace and a minus sign (and then wraps),
 * so the digits are checked by hand before trusting it.
 */
static int parse_digits(const char *s, const char **ret_end, uint64_t *ret_value)
{
        uint64_t v = 0;
        const char *p = s;

        if (!isdigit((unsigned char)*p))
                return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
                unsigned d = (unsigned)(*p - '0');

                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret_end = p;
        *ret_value = v;
        return 0;
}

int cairn_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
        const char *end;
        uint64_t v;
        int r;

        r = parse_digits(s, &end, &v);
        if (r < 0)
                return r;
        if (*end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret_value = v;
        return 0;
}

int cairn_parse_size(const char *s, uint64_t max, uint64_t *ret_size)
{
        const char *end;
        unsigned shift = 0;
        uint64_t v;
        int r;

        r = parse_digits(s, &end, &v);
        if (r < 0)
                return r;
        switch (toupper((unsigned char)*end)) {
        case '\0':
                break;
        case 'B':
                end++;
                break;
        case 'K':
                shift = 10;
                break;
        case 'M':
                shift = 20;
                break;
        case 'G':
                shift = 30;
                break;
        case 'T':
                shift = 40;
                break;
        default:
                return -EINVAL;
        }
        if (shift > 0) {
                end++;
                if (strcasecmp(end, "ib") == 0)
                        end += 2;
                else if (strcasecmp(end, "b") == 0)
                        end += 1;
        }
        if (*end != '\0')
                return -EINVAL;
        if (shift > 0 && v > (UINT64_MAX >> shift))
                return -ERANGE;
        v <<= shift;
        if (v > max)
                return -ERANGE;
        *ret_size = v;
        return 0;
}
