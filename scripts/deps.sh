#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs everything cairn needs to build and to run its tests on Debian
# bookworm, as root: the toolchain, the libraries libcairn and cairnfs link
# against, cmocka for the unit tests, clang and its compiler-rt for the
# libFuzzer build, fuse3 for real mounts, casync for the benchmark baseline,
# nginx for the http:// store tests.
#
# It is run at the start of scripts/test.sh and scripts/quickstart.sh, so it
# must be cheap when nothing is missing: apt is only touched (one update, one
# install) when dpkg says a package is absent.  It also makes sure /dev/fuse
# is there, since every integration test mounts.
#
# With --bench it also installs what only the benchmarks compare against
# (bench/remote.sh, bench/peers.sh: s3fs, rclone; python3-venv for a venv
# with safetensors and numpy from pip, at $CAIRN_BENCH_VENV, by default
# /var/tmp/cairn-bench-peers/venv, where bench/peers.sh looks for it), so
# that the tests do not pay for them.  libfuse3-dev (above) ships the
# passthrough_ll example that bench/peers.sh compiles.
set -euo pipefail

bench=0
for arg in "$@"; do
        case $arg in
        --bench) bench=1 ;;
        *) echo "usage: deps.sh [--bench]" >&2; exit 2 ;;
        esac
done

packages=(
        build-essential cmake pkg-config
        libfuse3-dev fuse3
        libzstd-dev libssl-dev libcurl4-openssl-dev liburing-dev
        libcmocka-dev
        libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
        clang libclang-rt-14-dev
        casync
        python3
        # The http:// store tests: nginx serves the store, openssl (the command)
        # makes the TLS certificates, curl checks the servers.
        nginx openssl curl
        attr util-linux mount procps kmod coreutils diffutils findutils
)

if ((bench)); then
        packages+=(s3fs rclone bc python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
        # dpkg-query prints the status even for packages it knows but that were
        # removed; only "install ok installed" means usable.
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
        if ((EUID != 0)); then
                echo "deps.sh: missing packages: ${missing[*]}; run as root to install them" >&2
                exit 1
        fi
        echo "deps.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The benchmarks' Python packages, in their own venv (never the system's
# site-packages); pip runs only when an import fails.
if ((bench)); then
        bench_venv=${CAIRN_BENCH_VENV:-/var/tmp/cairn-bench-peers/venv}
        if ! "$bench_venv/bin/python" -c 'import safetensors, numpy' 2>/dev/null; then
                echo "deps.sh: installing safetensors and numpy into $bench_venv" >&2
                python3 -m venv "$bench_venv"
                "$bench_venv/bin/pip" install -q safetensors numpy
        fi
fi

# csi-sanity (kubernetes-csi/csi-test) for tests/integration/test_csi_sanity.sh,
# built with `go install` at a pinned release (the latest v5 one when it was
# pinned) into /usr/local/bin.  Skipped when that release is already there;
# needs Go (in PATH or /usr/local/go) and the Go module proxy otherwise.
CSI_SANITY_VERSION=v5.6.0
install_csi_sanity() {
        local go bin=/usr/local/bin/csi-sanity
        go=$(command -v go || echo /usr/local/go/bin/go)
        if [[ -x "$bin" ]]; then
                # Built by go install: the module version is in the binary.
                if ! [[ -x "$go" ]] ||
                        "$go" version -m "$bin" 2>/dev/null | grep -q "csi-test/v5[[:space:]]*$CSI_SANITY_VERSION"; then
                        return 0
                fi
        fi
        if ! [[ -x "$go" ]]; then
                echo "deps.sh: Go is missing: cannot install csi-sanity" >&2
                return 1
        fi
        if ((EUID != 0)); then
                echo "deps.sh: csi-sanity $CSI_SANITY_VERSION is missing; run as root to install it" >&2
                return 1
        fi
        echo "deps.sh: installing csi-sanity $CSI_SANITY_VERSION" >&2
        GOBIN=/usr/local/bin GOFLAGS=-mod=mod "$go" install \
                "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
}
# Not fatal here: the csi-sanity test then fails and says what is missing.
install_csi_sanity || echo "deps.sh: warning: csi-sanity is not installed" >&2

# Go-built test servers, installed with `go install` at a pinned version into
# GO_TOOLS_BIN (/usr/local/bin), each only when that version is not there
# yet (the module version is recorded in the binary, so an upgrade of the
# pin reinstalls).  Needs Go (in PATH or /usr/local/go) and the module proxy
# only when something is missing.
GO_TOOLS_BIN=${GO_TOOLS_BIN:-/usr/local/bin}
# install_go_tool BINARY MODULE_PATH VERSION
install_go_tool() {
        local name=$1 pkg=$2 version=$3 go bin=$GO_TOOLS_BIN/$1
        go=$(command -v go || echo /usr/local/go/bin/go)
        if [[ -x "$bin" ]]; then
                # "<tab>mod<tab>MODULE<tab>VERSION<tab>SUM" names the version built.
                if ! [[ -x "$go" ]] || "$go" version -m "$bin" 2>/dev/null |
                        grep -q "^[[:space:]]*mod[[:space:]].*[[:space:]]$version[[:space:]]"; then
                        return 0
                fi
        fi
        if ! [[ -x "$go" ]]; then
                echo "deps.sh: Go is missing: cannot install $name" >&2
                return 1
        fi
        if [[ ! -w "$GO_TOOLS_BIN" ]]; then
                echo "deps.sh: $name $version is missing; run as root to install it" >&2
                return 1
        fi
        echo "deps.sh: installing $name $version" >&2
        GOBIN=$GO_TOOLS_BIN GOFLAGS=-mod=mod "$go" install "$pkg@$version"
}
# versitygw: the S3 server of tests/integration/test_s3_store.sh (it checks
# SigV4 signatures and payload hashes, and does multipart uploads).
VERSITYGW_VERSION=v1.8.0
install_go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION" ||
        echo "deps.sh: warning: versitygw is not installed; the S3 tests will skip" >&2

# FUSE: the module is built into most kernels; where it is a module, load it.
# Inside a container the device may simply not be passed through: we say so,
# and the integration tests skip (exit 77) rather than fail.
if [[ ! -c /dev/fuse ]]; then
        if command -v modprobe >/dev/null 2>&1; then
                modprobe fuse 2>/dev/null || true
        fi
        if [[ ! -e /dev/fuse && $EUID -eq 0 ]] && grep -qw fuse /proc/filesystems 2>/dev/null; then
                # The kernel has FUSE but nobody created the node (minimal /dev).
                mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
        fi
        [[ -c /dev/fuse ]] || echo "deps.sh: warning: /dev/fuse is missing; mounts will not work" >&2
fi
exit 0
