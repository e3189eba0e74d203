/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cairn-csi node plugin: its configuration, its state, and the gRPC
 * handlers of the Identity, Node and (minimal) Controller services.  The
 * handlers run on the server's worker threads, several at once; what they
 * share is read-only (configuration), on disk (csi_state) or locked
 * (locks).
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "csi_context.h"
#include "csi_lock.h"
#include "csi_state.h"
#include "grpc_server.h"

#define CSI_DEFAULT_DRIVER_NAME "cairn.csi.dev"
#define CSI_DEFAULT_STATE_DIR   "/var/lib/cairn-csi"
#define CSI_DEFAULT_CACHE_DIR   "/var/cache/cairn"
#define CSI_DEFAULT_KUBELET_DIR "/var/lib/kubelet"
/* kubelet gives a CSI call 2 minutes; a mount must fail before that. */
#define CSI_MOUNT_TIMEOUT_MS 100000u
#define CSI_VOLUME_ID_MAX    256

struct csi_plugin {
        /* Configuration: set before the server starts, read-only afterwards. */
        const char *driver_name;
        const char *node_id;
        const char *kubelet_dir; /* absolute, clean */
        const char *cache_dir;
        const char *cairnfs; /* absolute path of the cairnfs binary */
        char *secrets_dir;   /* STATE_DIR/secrets */
        unsigned mount_timeout_ms;
        struct csi_state *state;
        struct csi_lockset locks;
};

/* The methods served, for grpc_server_config. */
extern const struct grpc_method csi_methods[];
extern const size_t csi_methods_count;

/*
 * Copies the entries of a protobuf map<string, string> field (n entries
 * at entries) into a malloc'ed array of borrowed key/value pointers.
 */
int csi_map_to_kv(size_t n, void *entries, struct csi_kv **ret_kv);

/* Identity (csi_identity.c). */
int csi_get_plugin_info(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                        struct grpc_error *err);
int csi_get_plugin_capabilities(void *plugin, const ProtobufCMessage *req,
                                ProtobufCMessage **ret_resp, struct grpc_error *err);
int csi_probe(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
              struct grpc_error *err);

/* Controller (csi_identity.c): answered, never advertised. */
int csi_controller_get_capabilities(void *plugin, const ProtobufCMessage *req,
                                    ProtobufCMessage **ret_resp, struct grpc_error *err);
int csi_create_volume(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                      struct grpc_error *err);
int csi_delete_volume(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                      struct grpc_error *err);

/* Node (csi_node.c). */
int csi_node_stage(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                   struct grpc_error *err);
int csi_node_unstage(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                     struct grpc_error *err);
int csi_node_publish(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                     struct grpc_error *err);
int csi_node_unpublish(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                       struct grpc_error *err);
int csi_node_get_volume_stats(void *plugin, const ProtobufCMessage *req,
                              ProtobufCMessage **ret_resp, struct grpc_error *err);
int csi_node_get_capabilities(void *plugin, const ProtobufCMessage *req,
                              ProtobufCMessage **ret_resp, struct grpc_error *err);
int csi_node_get_info(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                      struct grpc_error *err);
