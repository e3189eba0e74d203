#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Dedup: an unchanged rebuild into the same tag gives the same manifest
# digest and adds no blob; after inserting 64 KiB at the start of a 20 MiB
# random file, a rebuild into the same tag, or a build of another volume
# with --base, stores less than 10% of the file again (the same build
# without --base stores nearly all of it, so the saving is the base's); a
# volume whose chunks live in another volume's pack mounts and reads
# correctly.  Small chunk sizes (avg 64 KiB) keep the file small and the
# figures far from chance.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

SRC=$T/src
SRC2=$T/src2
STORE=$T/store
MP=$T/mnt
MiB=$((1024 * 1024))
FILE_SIZE=$((20 * MiB))
INSERT=$((64 * 1024))
CHUNKING=(--chunk-min 16K --chunk-avg 64K --chunk-max 256K)

# new_pack_bytes BEFORE_LIST DIGEST: bytes of blobs not in BEFORE_LIST, the manifest excepted.
new_pack_bytes() {
        blob_list "$STORE" >"$T/blobs.now"
        comm -13 "$1" "$T/blobs.now" | awk -v m="${2#sha256:}" '$1 != m { s += $2 } END { print s + 0 }'
}

mkdir -p "$SRC/sub"
py randfile "$SRC/big.bin" $FILE_SIZE --seed 21
py randfile "$SRC/sub/other.bin" $((5 * MiB + 123)) --seed 22
echo "config" >"$SRC/sub/config.json"
ln -s big.bin "$SRC/latest"
cp -a "$SRC" "$SRC2"

step "first build"
d1=$(build_volume "$SRC" "$STORE" test/dedup:v1 "${CHUNKING[@]}")
blob_list "$STORE" >"$T/blobs.1"

step "an unchanged rebuild: same digest, no new blob"
d1b=$(build_volume "$SRC" "$STORE" test/dedup:v1 "${CHUNKING[@]}")
[[ "$d1b" == "$d1" ]] || fail "unchanged rebuild gave $d1b, first build $d1"
blob_list "$STORE" >"$T/blobs.1b"
if ! cmp -s "$T/blobs.1" "$T/blobs.1b"; then
        diff "$T/blobs.1" "$T/blobs.1b" >&2 || true
        fail "an unchanged rebuild changed the store's blobs"
fi

step "insert 64 KiB at the start; build another volume with --base"
py prepend "$SRC2/big.bin" $INSERT --seed 23
d2=$(build_volume "$SRC2" "$STORE" test/dedup-other:v1 "${CHUNKING[@]}" --base test/dedup:v1)
added=$(new_pack_bytes "$T/blobs.1" "$d2")
log "with --base: $added new pack bytes for a $FILE_SIZE-byte file"
((added * 10 < FILE_SIZE)) || fail "--base build added $added bytes, not under 10% of $FILE_SIZE"
((added >= INSERT / 2)) || fail "--base build added only $added bytes: the inserted data is missing"
blob_list "$STORE" >"$T/blobs.2"

run_timeout 60 "$CAIRN" inspect --store "$STORE" test/dedup-other:v1 --base test/dedup:v1 --json \
        >"$T/inspect.json"
shared=$(py jsonget "$T/inspect.json" base_shared_chunks)
((shared > 0)) || fail "inspect --base reports no chunk shared with the base"

step "the volume built on a base mounts and reads correctly"
mount_volume "$STORE" test/dedup-other:v1 "$MP" "$T/cache"
run_timeout 300 python3 "$HELPER" compare "$SRC2" "$MP"
umount_volume "$MP"
run_timeout 300 "$CAIRN" verify --store "$STORE" test/dedup-other:v1 >/dev/null 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify failed on a volume built with --base"
}

step "the same tree without --base stores nearly everything"
d3=$(build_volume "$SRC2" "$STORE" test/dedup-nobase:v1 "${CHUNKING[@]}")
added_nobase=$(new_pack_bytes "$T/blobs.2" "$d3")
log "without --base: $added_nobase new pack bytes"
((added_nobase * 10 > FILE_SIZE * 8)) ||
        fail "without --base only $added_nobase bytes were stored: dedup did not come from --base"

step "a changed rebuild into the same tag dedups against the tag's previous version"
blob_list "$STORE" >"$T/blobs.3"
py prepend "$SRC/big.bin" $INSERT --seed 24
d4=$(build_volume "$SRC" "$STORE" test/dedup:v1 "${CHUNKING[@]}")
[[ "$d4" != "$d1" ]] || fail "a changed tree kept the digest $d1"
added=$(new_pack_bytes "$T/blobs.3" "$d4")
log "rebuild into the same tag: $added new pack bytes"
((added * 10 < FILE_SIZE)) || fail "rebuild added $added bytes, not under 10% of $FILE_SIZE"
run_timeout 300 "$CAIRN" verify --store "$STORE" test/dedup:v1 >/dev/null 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify failed after a deduplicated rebuild"
}
