/* SPDX-License-Identifier: Apache-2.0 */
/*
 * errno -> gRPC status, in one table.  The CSI specification gives each
 * status a meaning for the CO (kubelet retries UNAVAILABLE and ABORTED,
 * treats NOT_FOUND on unpublish/unstage as done, ...), so handlers pick the
 * errno whose row below says what they mean:
 *
 *   EINVAL   a field is missing or malformed, a path is not acceptable
 *   ENOENT   the volume is not known (at that path)
 *   EEXIST   incompatible with what is already staged/published there
 *   EBUSY    refused because of the state (e.g. unstage while published)
 *   EINPROGRESS  another call for the same volume or path is running
 */
#include <errno.h>
#include <stddef.h>

#include "csi_status.h"

static const struct {
        int err;
        enum grpc_status status;
} errno_status[] = {
    /* The caller's request is wrong: retrying it unchanged cannot help. */
    {EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
    {ENAMETOOLONG, GRPC_STATUS_INVALID_ARGUMENT},
    {ELOOP, GRPC_STATUS_INVALID_ARGUMENT}, /* a symlinked path component */
    {ENOTDIR, GRPC_STATUS_INVALID_ARGUMENT},
    {EBADMSG, GRPC_STATUS_INVALID_ARGUMENT}, /* undecodable protobuf */
    {E2BIG, GRPC_STATUS_INVALID_ARGUMENT},
    /* State of the volume. */
    {ENOENT, GRPC_STATUS_NOT_FOUND},
    {EEXIST, GRPC_STATUS_ALREADY_EXISTS},
    {EBUSY, GRPC_STATUS_FAILED_PRECONDITION},
    {EINPROGRESS, GRPC_STATUS_ABORTED},
    {EPERM, GRPC_STATUS_PERMISSION_DENIED},
    {EACCES, GRPC_STATUS_PERMISSION_DENIED},
    /* Limits of this node. */
    {ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {EMFILE, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {ENFILE, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {EAGAIN, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {EMSGSIZE, GRPC_STATUS_RESOURCE_EXHAUSTED}, /* request over the size cap */
    {EOVERFLOW, GRPC_STATUS_OUT_OF_RANGE},
    {ERANGE, GRPC_STATUS_OUT_OF_RANGE},
    /* Transient: the CO retries. */
    {ETIMEDOUT, GRPC_STATUS_DEADLINE_EXCEEDED},
    {ENOTCONN, GRPC_STATUS_UNAVAILABLE}, /* a FUSE daemon died */
    {ECONNREFUSED, GRPC_STATUS_UNAVAILABLE},
    {ECONNRESET, GRPC_STATUS_UNAVAILABLE},
    {EHOSTUNREACH, GRPC_STATUS_UNAVAILABLE},
    {ENETUNREACH, GRPC_STATUS_UNAVAILABLE},
    {ESHUTDOWN, GRPC_STATUS_UNAVAILABLE}, /* the plugin is stopping */
    {ECANCELED, GRPC_STATUS_CANCELLED},
    /* Not something this plugin does. */
    {EOPNOTSUPP, GRPC_STATUS_UNIMPLEMENTED},
    {ENOSYS, GRPC_STATUS_UNIMPLEMENTED},
    {EPROTONOSUPPORT, GRPC_STATUS_UNIMPLEMENTED}, /* compressed message */
};

enum grpc_status csi_status_from_errno(int r)
{
        if (r >= 0)
                return GRPC_STATUS_OK;
        for (size_t i = 0; i < sizeof(errno_status) / sizeof(errno_status[0]); i++)
                if (errno_status[i].err == -r)
                        return errno_status[i].status;
        return GRPC_STATUS_INTERNAL;
}
