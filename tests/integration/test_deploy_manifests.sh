#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The Kubernetes manifests under deploy/kubernetes, checked without a
# cluster: deploy/check (Go, k8s.io/api) decodes every document strictly
# into the API types and checks the invariants the CSI plugin relies on
# (Bidirectional propagation only when privileged, pinned images, the
# CSIDriver's fields, the DaemonSet's sidecars, priority, devices and host
# paths).  Its own tests first prove that each invariant is enforced, by
# breaking it in a copy of the real manifests.  Where kubectl is installed,
# the kustomize output is checked the same way, so that what `kubectl apply
# -k` would send is what was checked.
#
# Needs Go (on PATH or in /usr/local/go); modules come from the Go module
# proxy once and are then cached, and go.sum must match (-mod=readonly).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$CAIRN_TESTS_SRC/.." && pwd)
CHECK_SRC=$REPO/deploy/check
MANIFESTS=$REPO/deploy/kubernetes
CHECK_BIN=$(dirname "$CAIRN_BIN")/deploy/check

GO=$(command -v go || true)
[[ -n "$GO" ]] || GO=/usr/local/go/bin/go
[[ -x "$GO" ]] || fail "go is not installed (PATH or /usr/local/go): deploy/check needs it"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
log "$("$GO" version)"

step "go vet and go test of deploy/check (each invariant is enforced)"
(cd "$CHECK_SRC" && run_timeout 600 "$GO" vet ./...) || fail "go vet deploy/check failed"
unformatted=$(cd "$CHECK_SRC" && "$(dirname "$(readlink -f "$GO")")/gofmt" -l .)
[[ -z "$unformatted" ]] || fail "not gofmt-formatted: $unformatted"
(cd "$CHECK_SRC" && run_timeout 600 "$GO" test -count=1 ./...) || fail "go test deploy/check failed"

step "building deploy/check"
mkdir -p "$(dirname "$CHECK_BIN")"
(cd "$CHECK_SRC" && run_timeout 600 "$GO" build -o "$CHECK_BIN" .) || fail "go build deploy/check failed"

step "checking the manifests under deploy/kubernetes"
run_timeout 120 "$CHECK_BIN" "$MANIFESTS/base" "$MANIFESTS/examples" || fail "the manifests do not pass"

step "a broken manifest fails the check (the binary, not only its unit tests)"
mkdir -p "$T/broken"
cp -r "$MANIFESTS/base" "$MANIFESTS/examples" "$T/broken/"
sed -i 's|livenessprobe:v[0-9][0-9.]*|livenessprobe:latest|' "$T/broken/base/daemonset.yaml"
grep -q 'livenessprobe:latest' "$T/broken/base/daemonset.yaml" || fail "could not break the copy"
expect_failure "check of a manifest using :latest" "$CHECK_BIN" "$T/broken/base" "$T/broken/examples"
expect_in_stderr "check of a manifest using :latest" "moving tag 'latest'"

if command -v kubectl >/dev/null; then
        step "checking what kustomize renders ($(kubectl version --client 2>/dev/null | head -n 1))"
        rendered=()
        for dir in base examples; do
                run_timeout 120 kubectl kustomize "$MANIFESTS/$dir" >"$T/$dir.rendered.yaml" ||
                        fail "kubectl kustomize $dir failed"
                rendered+=(-rendered "$T/$dir.rendered.yaml")
        done
        run_timeout 120 "$CHECK_BIN" "${rendered[@]}" || fail "the rendered manifests do not pass"
else
        log "kubectl is not installed: the kustomize output is not checked (the sources were)"
fi
