/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one place where a -errno from cairn-csi's code becomes a gRPC status
 * code.  Handlers return -errno (house style) and a message; the server
 * looks the code up here, so that the CSI error semantics are decided in a
 * single table (csi_status.c documents each row).
 */
#pragma once

#include "grpc_wire.h"

/* r < 0 is a -errno; r >= 0 is OK.  Unlisted errnos are INTERNAL. */
enum grpc_status csi_status_from_errno(int r);
