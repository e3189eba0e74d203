#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# cairn-csi end to end, through its real gRPC API: tests/integration/
# csi_e2e.py plays kubelet against the plugin on a unix socket, with a
# Python client generated here from csi/csi.proto (the project's own
# proto), and checks the node after every call (see its docstring for the
# scenarios: lifecycle from a local, an HTTP and an S3-style store; inline
# ephemeral volumes; idempotent repeats; every error code; path traversal
# and symlinks; a canary secret that must never leak; kill -9 of the plugin
# and of a daemon).
#
# The client needs grpcio and grpcio-tools: they are installed once into a
# virtual environment under the build's scratch directory
# ($CAIRN_SCRATCH/.venv-csi, pinned versions, reused while it works), from
# PyPI with pip.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

GRPC_VERSION=1.85.1
REPO=$(cd "$CAIRN_TESTS_SRC/.." && pwd)
PROTO=$REPO/csi/csi.proto
PLUGIN=$CAIRN_BIN/cairn-csi
VENV=$(realpath "$CAIRN_SCRATCH")/.venv-csi
WWW=$T/www
BUCKET=e2e-bucket
STORE=$WWW/$BUCKET/store
REF_V1=test/e2e:v1
REF_V2=test/e2e:v2

[[ -x "$PLUGIN" ]] || fail "$PLUGIN is missing: build first"
[[ -f "$PROTO" ]] || fail "$PROTO is missing"

step "python gRPC client (grpcio $GRPC_VERSION in $VENV)"
venv_ok() {
        "$VENV/bin/python" - "$GRPC_VERSION" <<'EOF' 2>/dev/null
import sys
import grpc, grpc_tools
from importlib.metadata import version
sys.exit(0 if version("grpcio") == sys.argv[1] and version("grpcio-tools") == sys.argv[1] else 1)
EOF
}
if ! venv_ok; then
        rm -rf "$VENV"
        run_timeout 120 python3 -m venv "$VENV" || fail "cannot create a virtual environment at $VENV"
        run_timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
                "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" ||
                fail "pip could not install grpcio and grpcio-tools $GRPC_VERSION"
        venv_ok || fail "the virtual environment at $VENV does not import grpc"
fi
mkdir -p "$T/gen"
run_timeout 120 "$VENV/bin/python" -m grpc_tools.protoc -I "$(dirname "$PROTO")" \
        --python_out="$T/gen" --grpc_python_out="$T/gen" "$PROTO" ||
        fail "generating the Python client from $PROTO failed"

step "building two volumes into a directory store"
py gentree "$T/src-v1" --profile demo --seed 11
py gentree "$T/src-v2" --profile small --seed 12
mkdir -p "$WWW/$BUCKET"
digest_v1=$(build_volume "$T/src-v1" "$STORE" "$REF_V1")
build_volume "$T/src-v2" "$STORE" "$REF_V2" >/dev/null

step "serving the store with nginx"
nginx_start "$WWW"
HTTP_STORE=$NGINX_URL/$BUCKET/store

# The same directory is also an S3 bucket to a path-style client that only
# reads (GET and HEAD of s3://BUCKET/KEY are GET and HEAD of /BUCKET/KEY),
# which exercises the plugin's credentials path end to end with a secret
# that really is used.  Whether the store code needs more of the S3 API
# than a static server offers is asked of `cairn inspect` first.
s3_args=()
if AWS_ACCESS_KEY_ID=AKIAE2EPROBE AWS_SECRET_ACCESS_KEY=probe AWS_REGION=us-east-1 \
        AWS_ENDPOINT_URL="$NGINX_URL" run_timeout 60 "$CAIRN" inspect \
        --store "s3://$BUCKET/store" "$REF_V1" >"$T/s3probe.out" 2>"$T/s3probe.err"; then
        s3_args=(--s3-store "s3://$BUCKET/store" --s3-endpoint "$NGINX_URL")
        log "s3://$BUCKET/store is readable through nginx: the S3 lifecycle runs too"
else
        log "s3://$BUCKET/store through nginx: $(head -n 1 "$T/s3probe.err"); no S3 lifecycle"
fi

step "csi_e2e.py"
# The plugin's sanitizer reports (an ASan build) go to $T/sanitizer like
# every other process's: lib.sh set the *SAN_OPTIONS log paths.
run_timeout 800 "$VENV/bin/python" "$CAIRN_TESTS_SRC/integration/csi_e2e.py" \
        --plugin "$PLUGIN" --gen "$T/gen" --scratch "$T" --helper "$HELPER" \
        --store "$STORE" --http-store "$HTTP_STORE" "${s3_args[@]}" \
        --ref-v1 "$REF_V1" --digest-v1 "$digest_v1" --ref-v2 "$REF_V2" \
        --src-v1 "$T/src-v1" --src-v2 "$T/src-v2" || fail "csi_e2e.py failed"
check_sanitizer_logs
