/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Identity service, the minimal Controller answers, and the method
 * table of cairn-csi.
 *
 * cairn-csi is a node plugin: GetPluginCapabilities does not announce the
 * Controller service, so a CO never calls it.  Three Controller calls are
 * answered anyway, because tools that exercise a node plugin (csi-sanity)
 * get their test volume from CreateVolume: a cairn volume needs no
 * provisioning, so CreateVolume only validates the parameters as a
 * volume_context and hands them back as the new volume's context (the
 * volume id is the requested name), and DeleteVolume has nothing to
 * delete.  ControllerGetCapabilities says exactly that: CREATE_DELETE_VOLUME.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "csi.pb-c.h"
#include "csi_plugin.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0.1.0"
#endif

int csi_map_to_kv(size_t n, void *entries, struct csi_kv **ret_kv)
{
        ProtobufCMessage **e = entries;
        struct csi_kv *kv;

        kv = calloc(n ? n : 1, sizeof(*kv));
        if (!kv)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const ProtobufCFieldDescriptor *k, *v;

                k = protobuf_c_message_descriptor_get_field_by_name(e[i]->descriptor, "key");
                v = protobuf_c_message_descriptor_get_field_by_name(e[i]->descriptor, "value");
                if (!k || !v || k->type != PROTOBUF_C_TYPE_STRING ||
                    v->type != PROTOBUF_C_TYPE_STRING) {
                        free(kv);
                        return -EINVAL;
                }
                kv[i].key = *(const char **)((const char *)e[i] + k->offset);
                kv[i].value = *(const char **)((const char *)e[i] + v->offset);
        }
        *ret_kv = kv;
        return 0;
}

int csi_get_plugin_info(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                        struct grpc_error *err)
{
        struct csi_plugin *p = plugin;
        Csi__V1__GetPluginInfoResponse *resp;

        (void)req;
        resp = (void *)grpc_response_new(&csi__v1__get_plugin_info_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->name = strdup(p->driver_name);
        resp->vendor_version = strdup(CAIRN_VERSION);
        if (!resp->name || !resp->vendor_version) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        *ret_resp = &resp->base;
        return 0;
}

int csi_get_plugin_capabilities(void *plugin, const ProtobufCMessage *req,
                                ProtobufCMessage **ret_resp, struct grpc_error *err)
{
        ProtobufCMessage *resp;

        (void)plugin;
        (void)req;
        /* No capability: a node-only plugin without topology constraints or expansion. */
        resp = grpc_response_new(&csi__v1__get_plugin_capabilities_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        *ret_resp = resp;
        return 0;
}

int csi_probe(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
              struct grpc_error *err)
{
        Csi__V1__ProbeResponse *resp;

        (void)plugin;
        (void)req;
        /* Serving calls is all readiness means here: there is no backend to wait for. */
        resp = (void *)grpc_response_new(&csi__v1__probe_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->ready = (void *)grpc_response_new(&csi__v1__bool_value__descriptor);
        if (!resp->ready) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        resp->ready->value = 1;
        *ret_resp = &resp->base;
        return 0;
}

int csi_controller_get_capabilities(void *plugin, const ProtobufCMessage *req,
                                    ProtobufCMessage **ret_resp, struct grpc_error *err)
{
        Csi__V1__ControllerGetCapabilitiesResponse *resp;
        Csi__V1__ControllerServiceCapability *cap;

        (void)plugin;
        (void)req;
        resp =
            (void *)grpc_response_new(&csi__v1__controller_get_capabilities_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->capabilities = calloc(1, sizeof(*resp->capabilities));
        cap = (void *)grpc_response_new(&csi__v1__controller_service_capability__descriptor);
        if (!resp->capabilities || !cap) {
                free(cap);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        resp->capabilities[0] = cap;
        resp->n_capabilities = 1;
        cap->rpc =
            (void *)grpc_response_new(&csi__v1__controller_service_capability__rpc__descriptor);
        if (!cap->rpc) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        cap->type_case = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
        cap->rpc->type = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_VOLUME;
        *ret_resp = &resp->base;
        return 0;
}

/* Adds key=value to a volume's context (strings copied). */
static int add_context(Csi__V1__Volume *vol, const char *key, const char *value)
{
        Csi__V1__Volume__VolumeContextEntry *e, **v;

        if (!value)
                return 0;
        v = realloc(vol->volume_context, (vol->n_volume_context + 1) * sizeof(*v));
        if (!v)
                return -ENOMEM;
        vol->volume_context = v;
        e = (void *)grpc_response_new(&csi__v1__volume__volume_context_entry__descriptor);
        if (!e)
                return -ENOMEM;
        v[vol->n_volume_context++] = e;
        e->key = strdup(key);
        e->value = strdup(value);
        return e->key && e->value ? 0 : -ENOMEM;
}

int csi_create_volume(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                      struct grpc_error *err)
{
        const Csi__V1__CreateVolumeRequest *req = (const void *)m;
        Csi__V1__CreateVolumeResponse *resp = NULL;
        struct csi_context ctx = {0};
        struct csi_kv *kv = NULL;
        Csi__V1__Volume *vol;
        int r;

        (void)plugin;
        if (!req->name[0])
                return grpc_fail(err, -EINVAL, "name is required");
        if (strlen(req->name) > CSI_VOLUME_ID_MAX)
                return grpc_fail(err, -EINVAL, "name is longer than %d bytes", CSI_VOLUME_ID_MAX);
        if (req->n_volume_capabilities == 0)
                return grpc_fail(err, -EINVAL, "volume_capabilities is required");
        for (size_t i = 0; i < req->n_volume_capabilities; i++)
                if (req->volume_capabilities[i]->access_type_case !=
                    CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT)
                        return grpc_fail(err, -EINVAL,
                                         "only mount access is supported: cairn volumes are "
                                         "filesystems");
        if (req->volume_content_source)
                return grpc_fail(err, -EINVAL, "cairn volumes cannot be created from a source");
        r = csi_map_to_kv(req->n_parameters, req->parameters, &kv);
        if (r < 0)
                return grpc_fail(err, r, "cannot read parameters");
        r = csi_context_parse(kv, req->n_parameters, &ctx, err->message, sizeof(err->message));
        free(kv);
        if (r < 0)
                return r;
        resp = (void *)grpc_response_new(&csi__v1__create_volume_response__descriptor);
        if (!resp) {
                r = -ENOMEM;
                goto out;
        }
        vol = (void *)grpc_response_new(&csi__v1__volume__descriptor);
        resp->volume = vol;
        r = -ENOMEM;
        if (!vol || !(vol->volume_id = strdup(req->name)))
                goto out;
        /* Only the validated keys go back: they become the context of every node call. */
        if (add_context(vol, "store", ctx.store) < 0 || add_context(vol, "ref", ctx.ref) < 0 ||
            add_context(vol, "memory_limit", ctx.memory_limit) < 0 ||
            add_context(vol, "prefetch", ctx.prefetch) < 0 ||
            add_context(vol, "region", ctx.region) < 0 ||
            add_context(vol, "endpoint", ctx.endpoint) < 0)
                goto out;
        *ret_resp = &resp->base;
        resp = NULL;
        r = 0;
out:
        if (resp)
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        csi_context_release(&ctx);
        return r < 0 ? grpc_fail(err, r, "out of memory") : 0;
}

int csi_delete_volume(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                      struct grpc_error *err)
{
        const Csi__V1__DeleteVolumeRequest *req = (const void *)m;
        ProtobufCMessage *resp;

        (void)plugin;
        if (!req->volume_id[0])
                return grpc_fail(err, -EINVAL, "volume_id is required");
        /* The volume's data belongs to its store, not to this "provisioning". */
        resp = grpc_response_new(&csi__v1__delete_volume_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        *ret_resp = resp;
        return 0;
}

#define METHOD(svc, name, type, fn, quiet)                                                         \
        {                                                                                          \
                "/csi.v1." svc "/" name, &csi__v1__##type##_request__descriptor, fn, quiet         \
        }

const struct grpc_method csi_methods[] = {
    METHOD("Identity", "GetPluginInfo", get_plugin_info, csi_get_plugin_info, true),
    METHOD("Identity", "GetPluginCapabilities", get_plugin_capabilities,
           csi_get_plugin_capabilities, true),
    METHOD("Identity", "Probe", probe, csi_probe, true),
    METHOD("Controller", "ControllerGetCapabilities", controller_get_capabilities,
           csi_controller_get_capabilities, true),
    METHOD("Controller", "CreateVolume", create_volume, csi_create_volume, false),
    METHOD("Controller", "DeleteVolume", delete_volume, csi_delete_volume, false),
    METHOD("Node", "NodeStageVolume", node_stage_volume, csi_node_stage, false),
    METHOD("Node", "NodeUnstageVolume", node_unstage_volume, csi_node_unstage, false),
    METHOD("Node", "NodePublishVolume", node_publish_volume, csi_node_publish, false),
    METHOD("Node", "NodeUnpublishVolume", node_unpublish_volume, csi_node_unpublish, false),
    METHOD("Node", "NodeGetVolumeStats", node_get_volume_stats, csi_node_get_volume_stats, false),
    METHOD("Node", "NodeGetCapabilities", node_get_capabilities, csi_node_get_capabilities, true),
    METHOD("Node", "NodeGetInfo", node_get_info, csi_node_get_info, true),
};

const size_t csi_methods_count = sizeof(csi_methods) / sizeof(csi_methods[0]);
