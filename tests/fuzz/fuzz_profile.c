/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the access-profile parser: profiles are replayed
 * from files a user (or a CSI volume_context) names, so they are
 * untrusted.  Every accepted input must round-trip: the ids it yields,
 * written out again, are byte for byte the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct cairn_profile p = {0};
        char err[256] = "";
        int r = cairn_profile_parse((const char *)data, size, &p, err, sizeof(err));
        if (r < 0) {
                if ((r == -EINVAL || r == -E2BIG) && !err[0])
                        abort(); /* every rejection explains itself */
                return 0;
        }
        size_t hlen = strlen(CAIRN_PROFILE_HEADER);
        if (size != hlen + p.n * (CAIRN_DIGEST_HEX_LEN + 1))
                abort();
        for (size_t i = 0; i < p.n; i++) {
                char hex[CAIRN_DIGEST_HEX_LEN + 1];
                cairn_digest_to_hex(&p.ids[i], hex);
                if (memcmp(hex, data + hlen + i * (CAIRN_DIGEST_HEX_LEN + 1), CAIRN_DIGEST_HEX_LEN))
                        abort();
        }
        cairn_profile_release(&p);
        return 0;
}
