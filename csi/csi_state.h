/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What this node has staged and published, on disk, so that a restarted
 * cairn-csi knows the mounts its previous incarnation made (they outlive
 * it) and can unpublish and unstage them.
 *
 * One small text file per staged volume (STATE_DIR/stage/<key>) and per
 * published target (STATE_DIR/publish/<key>), where <key> is the SHA-256
 * of the staging or target path in hex: the path a CO names is the lookup
 * key of every later call.  Files are written to a temporary name,
 * fsync'ed and renamed, so a crash leaves the old record or the new one.
 *
 * Record text: "key=value" lines; values are percent-encoded where they
 * hold '%', control characters or DEL, so any volume id or path fits on
 * one line.  Records never hold secrets.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "csi_context.h"

enum csi_record_kind {
        CSI_RECORD_STAGE,
        CSI_RECORD_PUBLISH,
};

struct csi_record {
        enum csi_record_kind kind;
        char *volume_id;
        char *path;             /* the staging path (stage) or the target path (publish) */
        char *staging_path;     /* publish of a staged volume: where it was bind-mounted from */
        struct csi_context ctx; /* stage, and ephemeral publish (staging_path NULL) */
};

#define CSI_RECORD_MAX (64u * 1024)

void csi_record_release(struct csi_record *rec);
/* The file's text (malloc'ed, NUL-terminated). */
int csi_record_format(const struct csi_record *rec, char **ret_text);
/* Parses and validates a record; -EINVAL on anything malformed. */
int csi_record_parse(const char *text, size_t len, struct csi_record *ret_rec);

struct csi_state;

/* Creates DIR, DIR/stage and DIR/publish (mode 0700) as needed. */
int csi_state_open(const char *dir, struct csi_state **ret_state);
void csi_state_free(struct csi_state *state);
const char *csi_state_dir(const struct csi_state *state);

/* -ENOENT when there is no record for path. */
int csi_state_load(struct csi_state *state, enum csi_record_kind kind, const char *path,
                   struct csi_record *ret_rec);
int csi_state_save(struct csi_state *state, const struct csi_record *rec);
/* Removing a record that is not there is fine. */
int csi_state_remove(struct csi_state *state, enum csi_record_kind kind, const char *path);

/*
 * Calls fn for every readable record of kind (unreadable or malformed
 * files are skipped with a warning); stops early and returns fn's value
 * when it is non-zero.
 */
int csi_state_foreach(struct csi_state *state, enum csi_record_kind kind,
                      int (*fn)(const struct csi_record *rec, void *userdata), void *userdata);
