/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CSI Node service: staging, publishing and their reverses.
 *
 * Persistent volumes: NodeStageVolume runs one cairnfs per volume at the
 * staging path; NodePublishVolume bind-mounts the staging path read-only
 * onto each target.  Inline ephemeral volumes (no staging path, or
 * volume_context csi.storage.k8s.io/ephemeral=true): NodePublishVolume
 * runs cairnfs directly on the target.  Every mount is read-only whatever
 * the access mode says (kubelet asks for SINGLE_NODE_WRITER for inline
 * volumes), and every mount on the node shares the node's chunk cache.
 *
 * Each call validates its request completely (InvalidArgument) before it
 * looks at any state, then takes the locks of its volume and paths (a
 * concurrent call for the same volume or path gets ABORTED), then
 * compares the request with the record of what is already there:
 * the same thing again is success (after repairing a mount whose cairnfs
 * died), something different is ALREADY_EXISTS.  Mounts are made before
 * their record is written, so a crash in between leaves a mount without a
 * record, which the next call for that path finds in mountinfo and
 * replaces.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "csi.pb-c.h"
#include "csi_mount.h"
#include "csi_path.h"
#include "csi_plugin.h"
#include "csi_secrets.h"
#include "csi_spawn.h"

/* The environment cairnfs runs with: nothing of ours, fusermount3 on PATH. */
#define CAIRNFS_PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Everything a call holds, released by call_release(). */
struct call {
        struct csi_plugin *p;
        const char *volume_id; /* locked when set */
        const char *paths[2];  /* locked when set */
        struct csi_context ctx;
        struct csi_secrets secrets;
        struct csi_record rec; /* the record found for the call's path */
        struct csi_kv *kv;
};

static void call_release(struct call *c)
{
        if (c->volume_id)
                csi_lockset_release(&c->p->locks, "volume", c->volume_id);
        for (int i = 0; i < 2; i++)
                if (c->paths[i])
                        csi_lockset_release(&c->p->locks, "path", c->paths[i]);
        csi_context_release(&c->ctx);
        csi_secrets_release(&c->secrets);
        csi_record_release(&c->rec);
        free(c->kv);
}

static int call_lock(struct call *c, const char *volume_id, const char *path1, const char *path2,
                     struct grpc_error *err)
{
        const char *paths[2] = {path1, path2};
        int r;

        r = csi_lockset_try(&c->p->locks, "volume", volume_id);
        if (r < 0)
                return grpc_fail(err, r, "an operation on volume '%s' is already in progress",
                                 volume_id);
        c->volume_id = volume_id;
        for (int i = 0; i < 2; i++) {
                if (!paths[i] || (i == 1 && path1 && strcmp(path1, paths[i]) == 0))
                        continue;
                r = csi_lockset_try(&c->p->locks, "path", paths[i]);
                if (r < 0)
                        return grpc_fail(err, r, "an operation on '%s' is already in progress",
                                         paths[i]);
                c->paths[i] = paths[i];
        }
        return 0;
}

/* volume_id: present, bounded, printable (it is logged and written to records). */
static int check_volume_id(const char *id, struct grpc_error *err)
{
        if (!id[0])
                return grpc_fail(err, -EINVAL, "volume_id is required");
        if (strlen(id) > CSI_VOLUME_ID_MAX)
                return grpc_fail(err, -EINVAL, "volume_id is longer than %d bytes",
                                 CSI_VOLUME_ID_MAX);
        for (const char *s = id; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return grpc_fail(err, -EINVAL, "volume_id contains a control character");
        return 0;
}

static int check_capability(const Csi__V1__VolumeCapability *cap, struct grpc_error *err)
{
        if (!cap)
                return grpc_fail(err, -EINVAL, "volume_capability is required");
        /* Any access mode: the mount is read-only whatever is asked for. */
        if (cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK)
                return grpc_fail(err, -EINVAL,
                                 "block access is not supported: cairn volumes are filesystems");
        if (cap->access_type_case != CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT)
                return grpc_fail(err, -EINVAL, "volume_capability has no access type");
        return 0;
}

static int parse_context(struct call *c, size_t n, void *entries, struct grpc_error *err)
{
        int r;

        free(c->kv);
        c->kv = NULL;
        r = csi_map_to_kv(n, entries, &c->kv);
        if (r < 0)
                return grpc_fail(err, r, "cannot read volume_context");
        return csi_context_parse(c->kv, n, &c->ctx, err->message, sizeof(err->message));
}

static int parse_secrets(struct call *c, size_t n, void *entries, struct grpc_error *err)
{
        int r;

        free(c->kv);
        c->kv = NULL;
        r = csi_map_to_kv(n, entries, &c->kv);
        if (r < 0)
                return grpc_fail(err, r, "cannot read secrets");
        r = csi_secrets_parse(c->kv, n, &c->secrets, err->message, sizeof(err->message));
        if (r < 0)
                return r;
        if (!csi_secrets_empty(&c->secrets) && c->ctx.store && !csi_context_is_s3(&c->ctx))
                return grpc_fail(err, -EINVAL, "secrets are only used by s3:// stores");
        return 0;
}

/* A path from the request: every check of csi_path.c; errors are the caller's (EINVAL). */
static int check_path(struct call *c, const char *what, const char *path,
                      enum csi_path_state *ret_state, struct grpc_error *err)
{
        char why[400];
        int r;

        r = csi_path_check(path, c->p->kubelet_dir, ret_state, why, sizeof(why));
        if (r == -EINVAL)
                return grpc_fail(err, r, "%s: %s", what, why);
        if (r < 0)
                return grpc_fail(err, r, "%s '%s': %s", what, path, strerror(-r));
        return 0;
}

/* Makes the mount point; its parent must exist (kubelet makes it). */
static int make_mountpoint(const char *path, enum csi_path_state state, struct grpc_error *err)
{
        if (state == CSI_PATH_NO_PARENT)
                return grpc_fail(err, -EINVAL, "the parent directory of '%s' does not exist", path);
        if (state == CSI_PATH_MISSING && mkdir(path, 0750) < 0 && errno != EEXIST)
                return grpc_fail(err, -errno, "cannot create '%s': %s", path, strerror(errno));
        return 0;
}

static int check_ref_exists(struct call *c, struct grpc_error *err);

/* Turns cairnfs's stderr into one printable line for the error message. */
static void one_line(char *s)
{
        const char prefix[] = "cairnfs: ";
        size_t n = 0;
        char *in = s;

        if (strncmp(in, prefix, sizeof(prefix) - 1) == 0)
                in += sizeof(prefix) - 1;
        for (; *in; in++) {
                if (*in == '\n') {
                        if (in[1] == '\0')
                                break;
                        s[n++] = ';';
                        s[n++] = ' ';
                        if (strncmp(in + 1, prefix, sizeof(prefix) - 1) == 0)
                                in += sizeof(prefix) - 1;
                } else {
                        s[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
                }
        }
        s[n] = '\0';
}

/*
 * Runs cairnfs for ctx on mountpoint and waits until it is mounted.
 * Credentials (s3 stores) are in a private directory for the duration of
 * the call only: cairnfs reads them when it opens the store, before it
 * mounts.
 */
static int run_cairnfs(struct call *c, const char *mountpoint, struct grpc_error *err)
{
        struct csi_plugin *p = c->p;
        char *source = NULL, *options = NULL, *dir = NULL, *cred_env = NULL, *conf_env = NULL;
        char output[400], fstype[64];
        static const char *const passed_env[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
        char *envp[3 + sizeof(passed_env) / sizeof(passed_env[0]) + 1] = {CAIRNFS_PATH_ENV};
        char *san_env[sizeof(passed_env) / sizeof(passed_env[0])] = {NULL};
        size_t n_env = 1;
        int status = 0, r;

        r = check_ref_exists(c, err);
        if (r < 0)
                goto out;
        r = csi_context_source(&c->ctx, &source);
        if (r >= 0)
                r = csi_context_mount_options(&c->ctx, p->cache_dir, &options);
        if (r < 0) {
                r = grpc_fail(err, r, "out of memory");
                goto out;
        }
        if (csi_context_is_s3(&c->ctx)) {
                /* Always our files, even empty: never credentials from elsewhere on the node. */
                r = csi_secrets_write(p->secrets_dir, &c->secrets, &c->ctx, &dir);
                if (r < 0) {
                        r = grpc_fail(err, r, "cannot write credentials under '%s': %s",
                                      p->secrets_dir, strerror(-r));
                        goto out;
                }
                if (asprintf(&cred_env, "AWS_SHARED_CREDENTIALS_FILE=%s/credentials", dir) < 0)
                        cred_env = NULL;
                if (asprintf(&conf_env, "AWS_CONFIG_FILE=%s/config", dir) < 0)
                        conf_env = NULL;
                if (!cred_env || !conf_env) {
                        r = grpc_fail(err, -ENOMEM, "out of memory");
                        goto out;
                }
                envp[n_env++] = cred_env;
                envp[n_env++] = conf_env;
        }
        /* Sanitizer builds: their reports must reach the files the tests read. */
        for (size_t i = 0; i < sizeof(passed_env) / sizeof(passed_env[0]); i++) {
                const char *v = getenv(passed_env[i]);

                if (v && asprintf(&san_env[i], "%s=%s", passed_env[i], v) >= 0)
                        envp[n_env++] = san_env[i];
                else
                        san_env[i] = NULL;
        }
        {
                char *argv[] = {"cairnfs", source, (char *)mountpoint, "-o", options, NULL};

                r = csi_spawn_run(p->cairnfs, argv, envp, p->mount_timeout_ms, &status, output,
                                  sizeof(output));
        }
        one_line(output);
        if (r == -ETIMEDOUT) {
                r = grpc_fail(err, r, "cairnfs did not mount '%s' within %u s%s%s", c->ctx.ref,
                              p->mount_timeout_ms / 1000, output[0] ? ": " : "", output);
                goto out;
        }
        if (r < 0) {
                r = grpc_fail(err, r, "cannot run '%s': %s", p->cairnfs, strerror(-r));
                goto out;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                /* Exit status 2 is a usage error: an option we passed was refused. */
                r = WIFEXITED(status) && WEXITSTATUS(status) == 2 ? -EINVAL : -EIO;
                if (output[0])
                        r = grpc_fail(err, r, "cannot mount '%s': %s", c->ctx.ref, output);
                else if (WIFSIGNALED(status))
                        r = grpc_fail(err, r, "cannot mount '%s': cairnfs was killed by %s",
                                      c->ctx.ref, strsignal(WTERMSIG(status)));
                else
                        r = grpc_fail(err, r, "cannot mount '%s': cairnfs exited with status %d",
                                      c->ctx.ref, WEXITSTATUS(status));
                goto out;
        }
        if (csi_mount_find(mountpoint, fstype, sizeof(fstype)) != 1) {
                r = grpc_fail(err, -EIO, "cairnfs exited but '%s' is not mounted", mountpoint);
                goto out;
        }
        r = 0;
out:
        if (dir) {
                int q = csi_secrets_remove(dir);

                if (q < 0)
                        cairn_err("cannot remove credentials '%s': %s", dir, strerror(-q));
        }
        free(dir);
        free(cred_env);
        free(conf_env);
        for (size_t i = 0; i < sizeof(san_env) / sizeof(san_env[0]); i++)
                free(san_env[i]);
        free(source);
        free(options);
        return r;
}

/*
 * NOT_FOUND for a ref the store does not have, before cairnfs runs: its
 * exit status says only that the mount failed.  Resolved the way cairnfs
 * will (a tag through refs/, a digest to its manifest blob).  Skipped
 * when the store needs the request's credentials (those only ever reach
 * cairnfs, through files), and any other failure is left for cairnfs to
 * report in its own words.
 */
static int check_ref_exists(struct call *c, struct grpc_error *err)
{
        struct cairn_store_options opts = {0};
        struct cairn_store *store = NULL;
        struct cairn_digest digest;
        struct cairn_ref ref;
        char why[256];
        uint64_t size;
        int r;

        if (csi_context_is_s3(&c->ctx)) {
                if (!csi_secrets_empty(&c->secrets))
                        return 0;
                /* What cairnfs will use: nothing from this process's environment. */
                opts.anonymous = true;
                opts.endpoint = c->ctx.endpoint;
                opts.region = c->ctx.region;
        }
        if (cairn_ref_parse(c->ctx.ref, &ref) < 0 ||
            cairn_store_open_with(c->ctx.store, &opts, &store, why, sizeof(why)) < 0)
                return 0;
        if (ref.by_digest)
                r = cairn_store_blob_size(store, &ref.digest, &size);
        else
                r = cairn_store_read_ref(store, ref.name, ref.tag, &digest);
        cairn_store_free(store);
        if (r == -ENOENT)
                return grpc_fail(err, -ENOENT, "%s '%s' is not in store '%s'",
                                 ref.by_digest ? "volume" : "tag", c->ctx.ref, c->ctx.store);
        return 0;
}

/*
 * What is mounted on path before we mount there: nothing (0), a healthy
 * mount (1), or nothing any more because a dead or leftover cairnfs mount
 * was detached (0).  Another filesystem mounted there is not ours to touch.
 */
static int prepare_mountpoint(const char *path, bool keep_healthy, struct grpc_error *err)
{
        char fstype[64] = "";
        int r;

        r = csi_mount_find(path, fstype, sizeof(fstype));
        if (r < 0)
                return grpc_fail(err, r, "cannot read the mount table: %s", strerror(-r));
        if (r == 0)
                return 0;
        if (strcmp(fstype, CSI_CAIRNFS_FSTYPE) != 0)
                return grpc_fail(err, -EBUSY, "'%s' is already a mount point (%s)", path, fstype);
        r = csi_mount_probe(path);
        if (r == 0 && keep_healthy)
                return 1;
        if (r < 0 && r != -ENOTCONN)
                return grpc_fail(err, r, "cannot stat '%s': %s", path, strerror(-r));
        if (r == -ENOTCONN)
                cairn_warn("'%s': its cairnfs is gone (%s); mounting again", path,
                           strerror(ENOTCONN));
        r = csi_mount_unmount(path, true);
        if (r < 0)
                return grpc_fail(err, r, "cannot unmount '%s': %s", path, strerror(-r));
        return 0;
}

struct find_staged {
        const char *volume_id;
        const char *path;
        char *other; /* another staging path of volume_id */
};

static int find_staged_elsewhere(const struct csi_record *rec, void *userdata)
{
        struct find_staged *f = userdata;

        if (strcmp(rec->volume_id, f->volume_id) != 0 || strcmp(rec->path, f->path) == 0)
                return 0;
        f->other = strdup(rec->path);
        return 1;
}

int csi_node_stage(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                   struct grpc_error *err)
{
        const Csi__V1__NodeStageVolumeRequest *req = (const void *)m;
        struct call c = {.p = plugin};
        struct find_staged f = {0};
        enum csi_path_state state;
        ProtobufCMessage *resp;
        int r;

        /* Every field first, in the order the specification lists them. */
        r = check_volume_id(req->volume_id, err);
        if (r < 0)
                goto out;
        if (!req->staging_target_path[0]) {
                r = grpc_fail(err, -EINVAL, "staging_target_path is required");
                goto out;
        }
        r = check_capability(req->volume_capability, err);
        if (r < 0)
                goto out;
        r = parse_context(&c, req->n_volume_context, req->volume_context, err);
        if (r < 0)
                goto out;
        r = parse_secrets(&c, req->n_secrets, req->secrets, err);
        if (r < 0)
                goto out;
        r = check_path(&c, "staging_target_path", req->staging_target_path, &state, err);
        if (r < 0)
                goto out;

        r = call_lock(&c, req->volume_id, req->staging_target_path, NULL, err);
        if (r < 0)
                goto out;
        r = csi_state_load(c.p->state, CSI_RECORD_STAGE, req->staging_target_path, &c.rec);
        if (r >= 0) {
                if (strcmp(c.rec.volume_id, req->volume_id) != 0) {
                        r = grpc_fail(err, -EEXIST, "'%s' is the staging path of volume '%s'",
                                      req->staging_target_path, c.rec.volume_id);
                        goto out;
                }
                if (!csi_context_equal(&c.rec.ctx, &c.ctx)) {
                        r = grpc_fail(err, -EEXIST,
                                      "volume '%s' is staged with a different volume_context",
                                      req->volume_id);
                        goto out;
                }
        } else if (r != -ENOENT) {
                r = grpc_fail(err, r, "cannot read the state of '%s': %s", req->staging_target_path,
                              strerror(-r));
                goto out;
        } else {
                /* One cairnfs per volume: a second staging path would be a second daemon. */
                f.volume_id = req->volume_id;
                f.path = req->staging_target_path;
                r = csi_state_foreach(c.p->state, CSI_RECORD_STAGE, find_staged_elsewhere, &f);
                if (r > 0) {
                        r = grpc_fail(err, -EEXIST, "volume '%s' is already staged at '%s'",
                                      req->volume_id, f.other ? f.other : "?");
                        goto out;
                }
                if (r < 0) {
                        r = grpc_fail(err, r, "cannot read the state directory: %s", strerror(-r));
                        goto out;
                }
        }
        /* Staged, mounted and answering: nothing to do. */
        r = prepare_mountpoint(req->staging_target_path, c.rec.volume_id != NULL, err);
        if (r < 0)
                goto out;
        if (r == 0) {
                r = make_mountpoint(req->staging_target_path, state, err);
                if (r < 0)
                        goto out;
                r = run_cairnfs(&c, req->staging_target_path, err);
                if (r < 0)
                        goto out;
        }
        if (!c.rec.volume_id) {
                struct csi_record rec = {
                    .kind = CSI_RECORD_STAGE,
                    .volume_id = (char *)req->volume_id,
                    .path = (char *)req->staging_target_path,
                    .ctx = c.ctx,
                };

                r = csi_state_save(c.p->state, &rec);
                if (r < 0) {
                        /* Unrecorded, the mount could not be unstaged after a restart. */
                        csi_mount_unmount(req->staging_target_path, false);
                        r = grpc_fail(err, r, "cannot record the staging of '%s': %s",
                                      req->volume_id, strerror(-r));
                        goto out;
                }
        }
        resp = grpc_response_new(&csi__v1__node_stage_volume_response__descriptor);
        if (!resp) {
                r = grpc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        *ret_resp = resp;
        r = 0;
out:
        free(f.other);
        call_release(&c);
        return r;
}

struct find_published {
        const char *staging_path;
        char *target;
};

static int find_published_from(const struct csi_record *rec, void *userdata)
{
        struct find_published *f = userdata;

        if (!rec->staging_path || strcmp(rec->staging_path, f->staging_path) != 0)
                return 0;
        f->target = strdup(rec->path);
        return 1;
}

/* Unmounts whatever of ours is on path (repeatedly: a dead mount may hide another). */
static int unmount_all(const char *path, bool any_fstype, struct grpc_error *err)
{
        char fstype[64];
        int r;

        for (int i = 0; i < 8; i++) {
                r = csi_mount_find(path, fstype, sizeof(fstype));
                if (r < 0)
                        return grpc_fail(err, r, "cannot read the mount table: %s", strerror(-r));
                if (r == 0)
                        return 0;
                if (!any_fstype && strcmp(fstype, CSI_CAIRNFS_FSTYPE) != 0)
                        return grpc_fail(err, -EBUSY, "'%s' is a mount point of another kind (%s)",
                                         path, fstype);
                r = csi_mount_unmount(path, csi_mount_probe(path) == -ENOTCONN);
                if (r < 0)
                        return grpc_fail(err, r, "cannot unmount '%s': %s", path, strerror(-r));
        }
        return grpc_fail(err, -EBUSY, "'%s' is still mounted", path);
}

int csi_node_unstage(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                     struct grpc_error *err)
{
        const Csi__V1__NodeUnstageVolumeRequest *req = (const void *)m;
        struct call c = {.p = plugin};
        struct find_published f = {0};
        enum csi_path_state state;
        ProtobufCMessage *resp;
        bool recorded;
        int r;

        r = check_volume_id(req->volume_id, err);
        if (r < 0)
                goto out;
        if (!req->staging_target_path[0]) {
                r = grpc_fail(err, -EINVAL, "staging_target_path is required");
                goto out;
        }
        r = check_path(&c, "staging_target_path", req->staging_target_path, &state, err);
        if (r < 0)
                goto out;
        r = call_lock(&c, req->volume_id, req->staging_target_path, NULL, err);
        if (r < 0)
                goto out;
        r = csi_state_load(c.p->state, CSI_RECORD_STAGE, req->staging_target_path, &c.rec);
        if (r < 0 && r != -ENOENT) {
                r = grpc_fail(err, r, "cannot read the state of '%s': %s", req->staging_target_path,
                              strerror(-r));
                goto out;
        }
        recorded = r >= 0;
        if (recorded && strcmp(c.rec.volume_id, req->volume_id) != 0) {
                r = grpc_fail(err, -ENOENT, "volume '%s' is not staged at '%s'", req->volume_id,
                              req->staging_target_path);
                goto out;
        }
        if (recorded) {
                f.staging_path = req->staging_target_path;
                r = csi_state_foreach(c.p->state, CSI_RECORD_PUBLISH, find_published_from, &f);
                if (r > 0) {
                        r = grpc_fail(err, -EBUSY, "volume '%s' is still published at '%s'",
                                      req->volume_id, f.target ? f.target : "?");
                        goto out;
                }
                if (r < 0) {
                        r = grpc_fail(err, r, "cannot read the state directory: %s", strerror(-r));
                        goto out;
                }
        }
        /* Without a record, only a cairnfs mount (left by a crash) is ours to remove. */
        if (state == CSI_PATH_DIR || state == CSI_PATH_DEAD_MOUNT) {
                r = unmount_all(req->staging_target_path, false, err);
                if (r < 0)
                        goto out;
        }
        if (recorded) {
                r = csi_state_remove(c.p->state, CSI_RECORD_STAGE, req->staging_target_path);
                if (r < 0) {
                        r = grpc_fail(err, r, "cannot remove the record of '%s': %s",
                                      req->staging_target_path, strerror(-r));
                        goto out;
                }
        }
        resp = grpc_response_new(&csi__v1__node_unstage_volume_response__descriptor);
        if (!resp) {
                r = grpc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        *ret_resp = resp;
        r = 0;
out:
        free(f.target);
        call_release(&c);
        return r;
}

/*
 * The staging mount a persistent publish binds from: recorded for this
 * volume, mounted, and answering; a staging mount whose cairnfs died is
 * mounted again first (with the publish call's secrets, if any).
 */
static int ensure_staged(struct call *c, const char *volume_id, const char *staging,
                         struct grpc_error *err)
{
        struct csi_record stage = {0};
        struct csi_context saved;
        int r;

        r = csi_state_load(c->p->state, CSI_RECORD_STAGE, staging, &stage);
        if (r == -ENOENT || (r >= 0 && strcmp(stage.volume_id, volume_id) != 0)) {
                r = grpc_fail(err, -EBUSY, "volume '%s' is not staged at '%s'", volume_id, staging);
                goto out;
        }
        if (r < 0) {
                r = grpc_fail(err, r, "cannot read the state of '%s': %s", staging, strerror(-r));
                goto out;
        }
        r = prepare_mountpoint(staging, true, err);
        if (r < 0)
                goto out;
        if (r == 0) {
                cairn_warn("volume '%s' is not mounted at its staging path '%s': mounting it "
                           "again",
                           volume_id, staging);
                saved = c->ctx;
                c->ctx = stage.ctx;
                r = run_cairnfs(c, staging, err);
                c->ctx = saved;
                if (r < 0)
                        goto out;
        }
        r = 0;
out:
        csi_record_release(&stage);
        return r;
}

int csi_node_publish(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                     struct grpc_error *err)
{
        const Csi__V1__NodePublishVolumeRequest *req = (const void *)m;
        const char *target = req->target_path, *staging = req->staging_target_path;
        struct call c = {.p = plugin};
        enum csi_path_state state, staging_state;
        ProtobufCMessage *resp;
        bool ephemeral;
        int r;

        r = check_volume_id(req->volume_id, err);
        if (r < 0)
                goto out;
        if (!target[0]) {
                r = grpc_fail(err, -EINVAL, "target_path is required");
                goto out;
        }
        r = check_capability(req->volume_capability, err);
        if (r < 0)
                goto out;
        /* A persistent volume's context was checked at stage; it may be absent here. */
        if (req->n_volume_context > 0) {
                r = parse_context(&c, req->n_volume_context, req->volume_context, err);
                if (r < 0)
                        goto out;
        }
        ephemeral = !staging[0] || c.ctx.ephemeral;
        if (ephemeral && !c.ctx.store) {
                r = grpc_fail(err, -EINVAL,
                              "volume_context with store and ref is required for a volume that "
                              "is not staged");
                goto out;
        }
        r = parse_secrets(&c, req->n_secrets, req->secrets, err);
        if (r < 0)
                goto out;
        r = check_path(&c, "target_path", target, &state, err);
        if (r < 0)
                goto out;
        if (!ephemeral) {
                r = check_path(&c, "staging_target_path", staging, &staging_state, err);
                if (r < 0)
                        goto out;
                if (staging_state == CSI_PATH_MISSING || staging_state == CSI_PATH_NO_PARENT) {
                        r = grpc_fail(err, -EBUSY, "volume '%s' is not staged at '%s'",
                                      req->volume_id, staging);
                        goto out;
                }
                if (strcmp(staging, target) == 0) {
                        r = grpc_fail(err, -EINVAL, "target_path is the staging path");
                        goto out;
                }
        }

        r = call_lock(&c, req->volume_id, target, ephemeral ? NULL : staging, err);
        if (r < 0)
                goto out;
        r = csi_state_load(c.p->state, CSI_RECORD_PUBLISH, target, &c.rec);
        if (r >= 0) {
                bool same = strcmp(c.rec.volume_id, req->volume_id) == 0 &&
                            !c.rec.staging_path == ephemeral &&
                            (ephemeral ? csi_context_equal(&c.rec.ctx, &c.ctx)
                                       : strcmp(c.rec.staging_path, staging) == 0);

                if (!same) {
                        r = grpc_fail(err, -EEXIST,
                                      "'%s' is already published, for volume '%s' with other "
                                      "parameters or for another volume",
                                      target, c.rec.volume_id);
                        goto out;
                }
        } else if (r != -ENOENT) {
                r = grpc_fail(err, r, "cannot read the state of '%s': %s", target, strerror(-r));
                goto out;
        }
        if (!ephemeral) {
                r = ensure_staged(&c, req->volume_id, staging, err);
                if (r < 0)
                        goto out;
        }
        r = prepare_mountpoint(target, c.rec.volume_id != NULL, err);
        if (r < 0)
                goto out;
        if (r == 0) {
                r = make_mountpoint(target, state, err);
                if (r < 0)
                        goto out;
                if (ephemeral) {
                        r = run_cairnfs(&c, target, err);
                } else {
                        r = csi_mount_bind_ro(staging, target);
                        if (r < 0)
                                r = grpc_fail(err, r, "cannot bind-mount '%s' on '%s': %s", staging,
                                              target, strerror(-r));
                }
                if (r < 0)
                        goto out;
        }
        if (!c.rec.volume_id) {
                struct csi_record rec = {
                    .kind = CSI_RECORD_PUBLISH,
                    .volume_id = (char *)req->volume_id,
                    .path = (char *)target,
                    .staging_path = ephemeral ? NULL : (char *)staging,
                };

                if (ephemeral)
                        rec.ctx = c.ctx;
                r = csi_state_save(c.p->state, &rec);
                if (r < 0) {
                        csi_mount_unmount(target, false);
                        r = grpc_fail(err, r, "cannot record the publishing of '%s': %s",
                                      req->volume_id, strerror(-r));
                        goto out;
                }
        }
        resp = grpc_response_new(&csi__v1__node_publish_volume_response__descriptor);
        if (!resp) {
                r = grpc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        *ret_resp = resp;
        r = 0;
out:
        call_release(&c);
        return r;
}

int csi_node_unpublish(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                       struct grpc_error *err)
{
        const Csi__V1__NodeUnpublishVolumeRequest *req = (const void *)m;
        const char *target = req->target_path;
        struct call c = {.p = plugin};
        enum csi_path_state state;
        ProtobufCMessage *resp;
        bool recorded;
        int r;

        r = check_volume_id(req->volume_id, err);
        if (r < 0)
                goto out;
        if (!target[0]) {
                r = grpc_fail(err, -EINVAL, "target_path is required");
                goto out;
        }
        r = check_path(&c, "target_path", target, &state, err);
        if (r < 0)
                goto out;
        r = call_lock(&c, req->volume_id, target, NULL, err);
        if (r < 0)
                goto out;
        r = csi_state_load(c.p->state, CSI_RECORD_PUBLISH, target, &c.rec);
        if (r < 0 && r != -ENOENT) {
                r = grpc_fail(err, r, "cannot read the state of '%s': %s", target, strerror(-r));
                goto out;
        }
        recorded = r >= 0;
        if (recorded && strcmp(c.rec.volume_id, req->volume_id) != 0) {
                r = grpc_fail(err, -ENOENT, "volume '%s' is not published at '%s'", req->volume_id,
                              target);
                goto out;
        }
        if (state == CSI_PATH_DIR || state == CSI_PATH_DEAD_MOUNT) {
                r = unmount_all(target, false, err);
                if (r < 0)
                        goto out;
                /* The specification wants the target gone; a non-empty one is not ours. */
                if (rmdir(target) < 0 && errno != ENOENT) {
                        r = grpc_fail(err, -errno, "cannot remove '%s': %s", target,
                                      strerror(errno));
                        goto out;
                }
        }
        if (recorded) {
                r = csi_state_remove(c.p->state, CSI_RECORD_PUBLISH, target);
                if (r < 0) {
                        r = grpc_fail(err, r, "cannot remove the record of '%s': %s", target,
                                      strerror(-r));
                        goto out;
                }
        }
        resp = grpc_response_new(&csi__v1__node_unpublish_volume_response__descriptor);
        if (!resp) {
                r = grpc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        *ret_resp = resp;
        r = 0;
out:
        call_release(&c);
        return r;
}

static Csi__V1__VolumeUsage *usage_new(Csi__V1__VolumeUsage__Unit unit, uint64_t total,
                                       uint64_t used, uint64_t available)
{
        Csi__V1__VolumeUsage *u = (void *)grpc_response_new(&csi__v1__volume_usage__descriptor);

        if (!u)
                return NULL;
        u->unit = unit;
        u->total = total > INT64_MAX ? INT64_MAX : (int64_t)total;
        u->used = used > INT64_MAX ? INT64_MAX : (int64_t)used;
        u->available = available > INT64_MAX ? INT64_MAX : (int64_t)available;
        return u;
}

int csi_node_get_volume_stats(void *plugin, const ProtobufCMessage *m, ProtobufCMessage **ret_resp,
                              struct grpc_error *err)
{
        const Csi__V1__NodeGetVolumeStatsRequest *req = (const void *)m;
        struct csi_plugin *p = plugin;
        Csi__V1__NodeGetVolumeStatsResponse *resp;
        struct csi_record rec = {0};
        struct statvfs sv;
        int r;

        r = check_volume_id(req->volume_id, err);
        if (r < 0)
                return r;
        if (!req->volume_path[0])
                return grpc_fail(err, -EINVAL, "volume_path is required");
        /*
         * Records exist only for checked paths: looking the path up first
         * answers NOT_FOUND for any path where the volume is not, without
         * touching the filesystem.
         */
        r = csi_state_load(p->state, CSI_RECORD_PUBLISH, req->volume_path, &rec);
        if (r == -ENOENT || (r >= 0 && strcmp(rec.volume_id, req->volume_id) != 0)) {
                csi_record_release(&rec);
                r = csi_state_load(p->state, CSI_RECORD_STAGE, req->volume_path, &rec);
        }
        if (r == -ENOENT || (r >= 0 && strcmp(rec.volume_id, req->volume_id) != 0)) {
                csi_record_release(&rec);
                return grpc_fail(err, -ENOENT, "volume '%s' is not staged or published at '%s'",
                                 req->volume_id, req->volume_path);
        }
        csi_record_release(&rec);
        if (r < 0)
                return grpc_fail(err, r, "cannot read the state of '%s': %s", req->volume_path,
                                 strerror(-r));
        if (statvfs(req->volume_path, &sv) < 0)
                return grpc_fail(err, -errno, "cannot stat '%s': %s", req->volume_path,
                                 strerror(errno));
        resp = (void *)grpc_response_new(&csi__v1__node_get_volume_stats_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->usage = calloc(2, sizeof(*resp->usage));
        if (resp->usage) {
                resp->usage[0] = usage_new(CSI__V1__VOLUME_USAGE__UNIT__BYTES,
                                           (uint64_t)sv.f_blocks * sv.f_frsize,
                                           (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize,
                                           (uint64_t)sv.f_bavail * sv.f_frsize);
                resp->usage[1] = usage_new(CSI__V1__VOLUME_USAGE__UNIT__INODES, sv.f_files,
                                           sv.f_files - sv.f_ffree, sv.f_favail);
                resp->n_usage = (resp->usage[0] != NULL) + (resp->usage[1] != NULL);
                if (!resp->usage[0] && resp->usage[1]) {
                        resp->usage[0] = resp->usage[1];
                        resp->usage[1] = NULL;
                }
        }
        if (!resp->usage || resp->n_usage != 2) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        *ret_resp = &resp->base;
        return 0;
}

int csi_node_get_capabilities(void *plugin, const ProtobufCMessage *req,
                              ProtobufCMessage **ret_resp, struct grpc_error *err)
{
        static const Csi__V1__NodeServiceCapability__RPC__Type types[] = {
            CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
            CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
        };
        Csi__V1__NodeGetCapabilitiesResponse *resp;

        (void)plugin;
        (void)req;
        resp = (void *)grpc_response_new(&csi__v1__node_get_capabilities_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->capabilities = calloc(2, sizeof(*resp->capabilities));
        if (!resp->capabilities)
                goto nomem;
        for (size_t i = 0; i < 2; i++) {
                Csi__V1__NodeServiceCapability *cap =
                    (void *)grpc_response_new(&csi__v1__node_service_capability__descriptor);

                if (!cap)
                        goto nomem;
                resp->capabilities[resp->n_capabilities++] = cap;
                cap->rpc =
                    (void *)grpc_response_new(&csi__v1__node_service_capability__rpc__descriptor);
                if (!cap->rpc)
                        goto nomem;
                cap->type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
                cap->rpc->type = types[i];
        }
        *ret_resp = &resp->base;
        return 0;
nomem:
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return grpc_fail(err, -ENOMEM, "out of memory");
}

int csi_node_get_info(void *plugin, const ProtobufCMessage *req, ProtobufCMessage **ret_resp,
                      struct grpc_error *err)
{
        struct csi_plugin *p = plugin;
        Csi__V1__NodeGetInfoResponse *resp;

        (void)req;
        resp = (void *)grpc_response_new(&csi__v1__node_get_info_response__descriptor);
        if (!resp)
                return grpc_fail(err, -ENOMEM, "out of memory");
        resp->node_id = strdup(p->node_id);
        if (!resp->node_id) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                return grpc_fail(err, -ENOMEM, "out of memory");
        }
        /* 0: no limit of our own (each volume costs one daemon, not a device). */
        resp->max_volumes_per_node = 0;
        *ret_resp = &resp->base;
        return 0;
}
