#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Damage must never be served.  One flipped byte in the stored bytes of one
# chunk (in the middle of a multi-chunk file) makes reads of that chunk fail
# with EIO while the bytes before it, the chunks after it and every other
# file still read correctly, the bad chunk never reaches the cache, and
# `cairn verify` fails naming the file.  A tampered manifest blob, manifests
# that hash correctly but break the format's rules, an unknown tag and a
# missing store are all refused at mount with a one-line error.  A damaged
# chunk-cache entry is dropped and the chunk fetched again from the store.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

SRC=$T/src
STORE=$T/store
MP=$T/mnt
NAME=test/corrupt
REF=$NAME:v1
EIO=5
MiB=$((1024 * 1024))

step "building a small volume with a 40 MiB multi-chunk file"
py gentree "$SRC" --profile small --seed 3
digest=$(build_volume "$SRC" "$STORE" "$REF")
MANIFEST=$(blob_path "$STORE" "$digest")
py chunks "$MANIFEST" multi.bin >"$T/chunks.json"

# chunk_field INDEX KEY: a field of the INDEX-th chunk of multi.bin.
chunk_field() {
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunks"][int(sys.argv[2])][sys.argv[3]])' \
                "$T/chunks.json" "$1" "$2"
}
nchunks=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["chunks"]))' \
        "$T/chunks.json")
((nchunks >= 5)) || fail "multi.bin has only $nchunks chunks; the test needs at least 5"
# A chunk well inside the file, with good chunks before and after it.
bad=$((nchunks / 2))
bad_off=$(chunk_field $bad file_offset)
bad_size=$(chunk_field $bad size)
bad_id=$(chunk_field $bad id)
bad_blob=$(blob_path "$STORE" "$(chunk_field $bad blob_hex)")
flip_at=$(($(chunk_field $bad blob_offset) + $(chunk_field $bad stored_size) / 2))
log "multi.bin: $nchunks chunks; damaging chunk $bad (file bytes $bad_off +$bad_size)"

step "flipping one stored byte of chunk $bad in its pack"
py flip "$bad_blob" "$flip_at"

step "reading the damaged file: correct prefix, then EIO"
mount_volume "$STORE" "$REF" "$MP" "$T/cache1"
py readprefix "$SRC/multi.bin" "$MP/multi.bin" >"$T/prefix.json"
log "sequential read: $(cat "$T/prefix.json")"
prefix=$(py jsonget "$T/prefix.json" prefix)
[[ "$(py jsonget "$T/prefix.json" match)" == true ]] || fail "the bytes read before the error differ"
[[ "$(py jsonget "$T/prefix.json" errno)" == "$EIO" ]] ||
        fail "reading past the damaged chunk did not fail with EIO"
((prefix <= bad_off)) || fail "read $prefix bytes, past the start ($bad_off) of the bad chunk"
# The page cache may lose what shares a page or a failed request with the bad chunk, no more.
((prefix + 4 * MiB >= bad_off)) ||
        fail "only $prefix bytes read before the error; the bad chunk starts at $bad_off"

py pread1 "$SRC/multi.bin" "$MP/multi.bin" $((bad_off + bad_size / 2)) 4096 >"$T/p.json"
[[ "$(py jsonget "$T/p.json" errno)" == "$EIO" ]] ||
        fail "pread inside the damaged chunk: $(cat "$T/p.json"), expected EIO"
py pread1 "$SRC/multi.bin" "$MP/multi.bin" 100 4096 >"$T/p.json"
[[ "$(py jsonget "$T/p.json" match)" == true ]] ||
        fail "pread in the first chunk: $(cat "$T/p.json")"
after=$((bad + 2 < nchunks ? bad + 2 : nchunks - 1))
py pread1 "$SRC/multi.bin" "$MP/multi.bin" $(($(chunk_field $after file_offset) + 10)) 8192 \
        >"$T/p.json"
[[ "$(py jsonget "$T/p.json" match)" == true ]] ||
        fail "pread in chunk $after, after the damaged one: $(cat "$T/p.json")"

for f in sub/medium.bin sub/deeper/small.txt hello.txt link ab empty; do
        cmp "$SRC/$f" "$MP/$f" || fail "$f does not read correctly next to a damaged file"
done
[[ ! -e "$T/cache1/chunks/${bad_id:0:2}/$bad_id" ]] || fail "the damaged chunk was cached"
umount_volume "$MP"

step "cairn verify fails and names the file"
expect_failure "cairn verify of a damaged volume" "$CAIRN" verify --store "$STORE" "$REF"
expect_in_stderr "cairn verify" multi.bin
for f in medium.bin small.txt hello.txt; do
        ! grep -qF "$f" "$T/last.err" || fail "cairn verify names $f, which is intact"
done
log "ok: cairn verify: $(head -n 3 "$T/last.err")"
py flip "$bad_blob" "$flip_at"
run_timeout 300 "$CAIRN" verify --store "$STORE" "$REF" >/dev/null 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify fails after the byte was restored"
}

step "a tampered manifest blob is refused at mount"
cp "$MANIFEST" "$T/manifest.orig"
py flip "$MANIFEST" $(($(stat -c %s "$MANIFEST") / 2))
mkdir -p "$MP"
expect_failure "mounting a tampered manifest" \
        "$CAIRN" mount --store "$STORE" "$REF" "$MP" --cache-dir "$T/cache-tamper"
expect_one_line_error "tampered manifest"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after a refused mount"; }
expect_failure "inspecting a tampered manifest" "$CAIRN" inspect --store "$STORE" "$REF"
expect_one_line_error "inspect of a tampered manifest"
cp "$T/manifest.orig" "$MANIFEST"

step "manifests with a correct digest but invalid contents are refused"
for kind in slash-in-name dotdot-name size-mismatch chunk-out-of-range truncated cycle version; do
        bad_digest=$(py badmanifest "$T/manifest.orig" "$T/bad.idx" "$kind" --path multi.bin)
        cp "$T/bad.idx" "$(blob_path "$STORE" "$bad_digest")"
        expect_failure "mounting a manifest with $kind" \
                "$CAIRN" mount --store "$STORE" "$NAME@$bad_digest" "$MP" --cache-dir "$T/cache-bad"
        expect_one_line_error "manifest with $kind"
        ! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted with an invalid manifest"; }
        rm -f "$(blob_path "$STORE" "$bad_digest")"
done

step "unknown tag, missing store, missing manifest"
expect_failure "mounting an unknown tag" \
        "$CAIRN" mount --store "$STORE" "$NAME:nope" "$MP" --cache-dir "$T/cache-x"
expect_one_line_error "unknown tag"
expect_failure "mounting from a missing store" \
        "$CAIRN" mount --store "$T/no-such-store" "$REF" "$MP" --cache-dir "$T/cache-x"
expect_one_line_error "missing store"
expect_failure "mounting from a missing file:// store" \
        "$CAIRN" mount --store "file://$T/no-such-store" "$REF" "$MP" --cache-dir "$T/cache-x"
expect_one_line_error "missing file:// store"
expect_failure "mounting a digest that is not in the store" \
        "$CAIRN" mount --store "$STORE" "$NAME@sha256:$(printf '%064d' 0)" "$MP" \
        --cache-dir "$T/cache-x"
expect_one_line_error "missing manifest"
expect_failure "inspecting an unknown tag" "$CAIRN" inspect --store "$STORE" "$NAME:nope"
expect_one_line_error "inspect of an unknown tag"
expect_failure "verifying an unknown tag" "$CAIRN" verify --store "$STORE" "$NAME:nope"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after refused mounts"; }

step "a damaged chunk-cache entry is dropped and fetched again"
CACHE=$T/cache2
mount_volume "$STORE" "$REF" "$MP" "$CACHE"
cmp "$SRC/multi.bin" "$MP/multi.bin" || fail "multi.bin differs after the pack was restored"
umount_volume "$MP"
damaged_id=$(chunk_field 1 id)
damaged=$CACHE/chunks/${damaged_id:0:2}/$damaged_id
truncated_id=$(chunk_field 3 id)
truncated=$CACHE/chunks/${truncated_id:0:2}/$truncated_id
[[ -f "$damaged" && -f "$truncated" ]] ||
        fail "reading multi.bin did not cache its chunks at CACHE/chunks/<2 hex>/<64 hex>"
py cache-entry-ok "$damaged" ||
        fail "the cache entry $damaged is not <chunk><zero padding><16-byte trailer>"
py flip "$damaged" $(($(chunk_field 1 size) / 2))
truncate -s 100 "$truncated"
mount_volume "$STORE" "$REF" "$MP" "$CACHE"
cmp "$SRC/multi.bin" "$MP/multi.bin" || fail "multi.bin reads wrong bytes from a damaged cache"
umount_volume "$MP"
for entry in "$damaged" "$truncated"; do
        [[ -f "$entry" ]] || fail "the damaged cache entry $entry was dropped but not cached again"
        py cache-entry-ok "$entry" || fail "the cache entry $entry is still damaged"
done
