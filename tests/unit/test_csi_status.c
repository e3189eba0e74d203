/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The errno -> gRPC status table of cairn-csi (csi/csi_status.c).  The
 * CSI error semantics hang on it: kubelet treats NOT_FOUND on unpublish as
 * done, retries ABORTED and UNAVAILABLE, and reports INVALID_ARGUMENT as
 * the user's mistake, so each row the handlers rely on is pinned here.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "csi_status.h"

static void test_table(void **state)
{
        static const struct {
                int r;
                enum grpc_status status;
        } rows[] = {
            {0, GRPC_STATUS_OK},
            {1, GRPC_STATUS_OK},
            {-EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
            {-ELOOP, GRPC_STATUS_INVALID_ARGUMENT},
            {-ENAMETOOLONG, GRPC_STATUS_INVALID_ARGUMENT},
            {-EBADMSG, GRPC_STATUS_INVALID_ARGUMENT},
            {-ENOENT, GRPC_STATUS_NOT_FOUND},
            {-EEXIST, GRPC_STATUS_ALREADY_EXISTS},
            {-EBUSY, GRPC_STATUS_FAILED_PRECONDITION},
            {-EINPROGRESS, GRPC_STATUS_ABORTED},
            {-EACCES, GRPC_STATUS_PERMISSION_DENIED},
            {-EPERM, GRPC_STATUS_PERMISSION_DENIED},
            {-ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
            {-EMSGSIZE, GRPC_STATUS_RESOURCE_EXHAUSTED},
            {-EAGAIN, GRPC_STATUS_RESOURCE_EXHAUSTED},
            {-ETIMEDOUT, GRPC_STATUS_DEADLINE_EXCEEDED},
            {-ENOTCONN, GRPC_STATUS_UNAVAILABLE},
            {-ECONNREFUSED, GRPC_STATUS_UNAVAILABLE},
            {-EOPNOTSUPP, GRPC_STATUS_UNIMPLEMENTED},
            {-EPROTONOSUPPORT, GRPC_STATUS_UNIMPLEMENTED},
            {-ECANCELED, GRPC_STATUS_CANCELLED},
            {-ERANGE, GRPC_STATUS_OUT_OF_RANGE},
            /* Anything unlisted is our failure, not the caller's. */
            {-EIO, GRPC_STATUS_INTERNAL},
            {-EFAULT, GRPC_STATUS_INTERNAL},
            {-4095, GRPC_STATUS_INTERNAL},
        };

        (void)state;
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                if (csi_status_from_errno(rows[i].r) != rows[i].status)
                        fail_msg("errno %d: got %s, expected %s", -rows[i].r,
                                 grpc_status_name(csi_status_from_errno(rows[i].r)),
                                 grpc_status_name(rows[i].status));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_table),
        };
        return cmocka_run_group_tests_name("csi_status", tests, NULL, NULL);
}
