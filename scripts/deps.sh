#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installs everything cairn needs to build and to run its tests on Debian
# bookworm, as root: the toolchain, the libraries libcairn and cairnfs link
# against, cmocka for the unit tests, clang and its compiler-rt for the
# libFuzzer build, fuse3 for real mounts, casync for the benchmark baseline.
#
# It is run at the start of scripts/test.sh and scripts/quickstart.sh, so it
# must be cheap when nothing is missing: apt is only touched (one update, one
# install) when dpkg says a package is absent.  It also makes sure /dev/fuse
# is there, since every integration test mounts.
set -euo pipefail

packages=(
        build-essential cmake pkg-config
        libfuse3-dev fuse3
        libzstd-dev libssl-dev libcurl4-openssl-dev liburing-dev
        libcmocka-dev
        clang libclang-rt-14-dev
        casync
        python3
        attr util-linux mount procps kmod coreutils diffutils findutils
)

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
