#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# csi-sanity (kubernetes-csi/csi-test, installed by scripts/deps.sh) against
# cairn-csi on a unix socket, with real mounts: a small volume is built into
# a local store, cairn-csi serves with a kubelet directory inside the
# scratch directory, and csi-sanity runs every Identity and Node test.  The
# Controller suites are skipped (cairn-csi is a node plugin); csi-sanity's
# node tests still get their volume from CreateVolume, whose parameters
# (--csi.testvolumeparameters: store and ref) cairn-csi hands back as the
# volume_context.  All remaining tests must pass, and afterwards nothing may
# be left mounted, recorded or running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse
((EUID == 0)) || skip "cairn-csi mounts (mount(2), bind mounts): needs root"

SANITY=$(command -v csi-sanity || echo /usr/local/bin/csi-sanity)
[[ -x "$SANITY" ]] || fail "csi-sanity is missing: run scripts/deps.sh"
CSI=$CAIRN_BIN/cairn-csi
[[ -x "$CSI" ]] || fail "$CSI is missing: build first"

KUBELET=$T/kubelet
STATE=$T/state
SOCK=$T/csi.sock
csi_pid=

# The EXIT trap of lib.sh unmounts what is left under $T; cairn-csi must be
# gone first (SIGKILL: a test that failed may have left it busy).
_csi_stop() {
        if [[ -n "$csi_pid" ]] && kill -0 "$csi_pid" 2>/dev/null; then
                kill -KILL "$csi_pid" 2>/dev/null
                wait "$csi_pid" 2>/dev/null
        fi
}
trap 'rc=$?; _csi_stop; (exit $rc); _cleanup' EXIT

step "building a small volume"
mkdir -p "$T/src/dir"
head -c 3000000 /dev/urandom >"$T/src/random.bin"
echo "hello from cairn" >"$T/src/dir/hello.txt"
build_volume "$T/src" "$T/store" test/sanity:v1 >/dev/null

step "starting cairn-csi"
mkdir -p "$KUBELET/pods/sanity" "$KUBELET/plugins/kubernetes.io/csi/cairn.csi.dev"
"$CSI" --endpoint "unix://$SOCK" --node-id sanity-node --state-dir "$STATE" \
        --cache-dir "$T/cache" --kubelet-dir "$KUBELET" --cairnfs "$CAIRNFS" \
        2>"$T/csi.log" &
csi_pid=$!
for _ in $(seq 100); do
        [[ -S "$SOCK" ]] && break
        kill -0 "$csi_pid" 2>/dev/null || {
                cat "$T/csi.log" >&2
                fail "cairn-csi exited at start"
        }
        sleep 0.1
done
[[ -S "$SOCK" ]] || fail "cairn-csi did not create $SOCK"

cat >"$T/params.yaml" <<EOF
store: file://$T/store
ref: test/sanity:v1
EOF

step "running csi-sanity ($("$SANITY" -version 2>/dev/null | tr -d '\n'))"
rc=0
run_timeout 600 "$SANITY" \
        --csi.endpoint="unix://$SOCK" \
        --csi.testvolumeparameters="$T/params.yaml" \
        --csi.mountdir="$KUBELET/pods/sanity/mount" \
        --csi.stagingdir="$KUBELET/plugins/kubernetes.io/csi/cairn.csi.dev/staging" \
        -ginkgo.skip='Controller' -ginkgo.no-color >"$T/sanity.log" 2>&1 || rc=$?
summary=$(grep -E '^(SUCCESS!|FAIL!)' "$T/sanity.log" | tail -n 1)
ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$T/sanity.log" | tail -n 1)
log "csi-sanity: $ran; $summary"
if ((rc != 0)) || [[ "$summary" != SUCCESS!* ]]; then
        grep -E -A 12 '^\s*\[FAIL\]|\[FAILED\]' "$T/sanity.log" >&2 || tail -n 80 "$T/sanity.log" >&2
        log "cairn-csi log:"
        tail -n 40 "$T/csi.log" >&2
        fail "csi-sanity failed (status $rc)"
fi
# The node tests that mount must have run, not been skipped.
passed=$(sed -nE 's/.* ([0-9]+) Passed.*/\1/p' <<<"$summary")
((passed >= 20)) || fail "only ${passed:-0} csi-sanity tests passed; expected at least 20"
grep -q 'NodeStageVolume volume .*: OK' "$T/csi.log" || fail "no NodeStageVolume succeeded"
grep -q 'NodePublishVolume volume .*: OK' "$T/csi.log" || fail "no NodePublishVolume succeeded"

step "checking that nothing is left behind"
while read -r mp; do
        [[ "$mp" == "$KUBELET"/* ]] && fail "still mounted: $mp"
done < <(_mount_table)
left=$(find "$STATE/stage" "$STATE/publish" "$STATE/secrets" -mindepth 1 | head -n 5)
[[ -z "$left" ]] || fail "state left behind: $left"

step "stopping cairn-csi"
kill -TERM "$csi_pid"
rc=0
wait "$csi_pid" || rc=$?
csi_pid=
((rc == 0)) || fail "cairn-csi exited with status $rc on SIGTERM"
[[ ! -e "$SOCK" ]] || fail "cairn-csi left its socket behind"
check_sanitizer_logs
