#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The first command of the README's Quick start: installs the dependencies,
# builds cairn, generates a small fake model (config, tokenizer, two weight
# shards, a symlink), builds it into a local store, mounts it, and reads it
# back, printing each command as it runs.  The mount stays up; the last
# lines say how to unmount it.
#
# Everything goes under ./scratch/demo (CAIRN_DEMO_DIR overrides; the build
# directory is ./build, CAIRN_BUILD_DIR overrides).  Running it again first
# unmounts the previous demo mount, then rebuilds into the same tag, which
# dedups against the previous version.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD=${CAIRN_BUILD_DIR:-build}
DEMO=${CAIRN_DEMO_DIR:-$ROOT/scratch/demo}
SRC=$DEMO/model
STORE=$DEMO/store
CACHE=$DEMO/cache
MP=$DEMO/mnt
REF=demo/tiny-model:v1
SHARD=model-00001-of-00002.safetensors

if [[ -t 1 ]]; then
        bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'
else
        bold='' dim='' off=''
fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
# Shows a command, then runs it.
run() {
        printf '%s$ %s%s\n' "$dim" "$*" "$off"
        "$@"
}
is_mounted() { awk -v mp="$1" '$5 == mp { f = 1 } END { exit !f }' /proc/self/mountinfo; }
cached_chunks() { find "$CACHE" -path '*/chunks/*' -type f 2>/dev/null | wc -l; }

say "installing dependencies (scripts/deps.sh)"
bash scripts/deps.sh

say "building cairn in $BUILD/"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target cairn-cli cairnfs >/dev/null
CAIRN=$ROOT/$BUILD/bin/cairn
run "$CAIRN" --version

mkdir -p "$DEMO"
if is_mounted "$MP"; then
        say "unmounting the previous demo mount"
        run "$CAIRN" umount "$MP" || umount -l "$MP"
fi

if [[ ! -d "$SRC" ]]; then
        say "generating a demo model in $SRC"
        python3 tests/integration/cairntest.py gentree "$SRC" --profile demo --seed 2024
fi
run ls -la "$SRC"

say "building it into the store $STORE"
run "$CAIRN" build "$SRC" --store "$STORE" --tag "$REF" | tee "$DEMO/build.out"
digest=$(tail -n 1 "$DEMO/build.out")

say "mounting $REF at $MP (only the manifest is read)"
mkdir -p "$MP"
run "$CAIRN" mount --store "$STORE" "$REF" "$MP" --cache-dir "$CACHE"
run ls -la "$MP"
run head -n 5 "$MP/config.json"
run readlink "$MP/latest.safetensors"

say "reading a weight shard through the mount (fetched, verified, cached)"
before=$(cached_chunks)
run sha256sum "$SRC/$SHARD" "$MP/$SHARD"
if [[ "$(sha256sum <"$SRC/$SHARD")" != "$(sha256sum <"$MP/$SHARD")" ]]; then
        echo "quickstart: the mounted shard differs from its source" >&2
        exit 1
fi
echo "chunks in the cache: $before before reading the shard, $(cached_chunks) after"

say "what the volume holds"
run "$CAIRN" inspect --store "$STORE" "$REF"

say "done"
cat <<EOF
The demo volume $REF ($digest)
is mounted read-only at $MP.

Unmount it with:
    $CAIRN umount $MP
EOF
