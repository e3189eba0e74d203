#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The whole path, end to end: a generated tree full of awkward cases (chunk
# limits +-1 byte, a 300 MiB random file, compressible data, every kind of
# symlink, odd names, 5,000 small files, modes, owners, nanosecond mtimes,
# a FIFO and a socket that must be skipped) is built into a store, mounted,
# and compared with its source in every attribute and byte; then random
# preads, mmap reads, the EROFS refusals, laziness (metadata reads fetch
# nothing, one small read fetches one chunk), and a remount with the packs
# taken out of the store, which only works if every chunk now comes from
# the chunk cache.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

SRC=$T/src
STORE=$T/store
CACHE=$T/cache
MP=$T/mnt
REF=test/roundtrip:v1
BIG_MIB=${CAIRN_TEST_BIG_MIB:-300}
BIG=big/random-${BIG_MIB}M.bin

step "generating the source tree (${BIG_MIB} MiB big file)"
py gentree "$SRC" --profile roundtrip --big-mib "$BIG_MIB" --specials
expected=$(py treecount "$SRC")
echo "$expected" >"$T/expected.json"
log "source: $expected"

step "building $REF"
digest=$(build_volume "$SRC" "$STORE" "$REF")
log "manifest $digest"
for special in special/fifo special/sock; do
        grep -i 'skip' "$T/build.err" | grep -qF "$special" || {
                cat "$T/build.err" >&2
                fail "no warning about skipping $special"
        }
done
[[ -f "$(blob_path "$STORE" "$digest")" ]] || fail "the manifest blob is not in the store"

step "cairn inspect --json"
run_timeout 60 "$CAIRN" inspect --store "$STORE" "$REF" --json >"$T/inspect.json"
for key in files symlinks; do
        want=$(py jsonget "$T/expected.json" "$key")
        got=$(py jsonget "$T/inspect.json" "$key")
        [[ "$got" == "$want" ]] || fail "inspect: $key is $got, the source has $want"
done
want=$(py jsonget "$T/expected.json" bytes)
got=$(py jsonget "$T/inspect.json" logical_bytes)
[[ "$got" == "$want" ]] || fail "inspect: logical_bytes is $got, the source has $want"
want=$(py jsonget "$T/expected.json" dirs)
got=$(py jsonget "$T/inspect.json" dirs)
# The root may or may not be counted; nothing else may differ.
[[ "$got" == "$want" || "$got" == "$((want + 1))" ]] ||
        fail "inspect: dirs is $got, the source has $want (+ the root)"
[[ "$(py jsonget "$T/inspect.json" manifest)" == "$digest" ]] ||
        fail "inspect: manifest differs from the digest cairn build printed"

step "laziness: metadata reads fetch nothing, a small read fetches its chunk"
mount_volume "$STORE" "$REF" "$MP" "$T/lazy-cache"
find "$MP" -printf '%s %m %U %G %l\n' >/dev/null
n=$(find "$T/lazy-cache" -path '*/chunks/*' -type f | wc -l)
((n == 0)) || fail "stat/readdir of the whole tree put $n chunk(s) in the cache"
[[ "$(cat "$MP/sizes/one_byte")" == x ]] || fail "sizes/one_byte does not read 'x'"
n=$(find "$T/lazy-cache" -path '*/chunks/*' -type f | wc -l)
((n >= 1 && n <= 4)) || fail "reading a 1-byte file put $n chunk(s) in the cache, expected 1"
umount_volume "$MP"

step "mounting $REF and comparing everything with the source"
mount_volume "$STORE" "$REF" "$MP" "$CACHE"
run_timeout 600 python3 "$HELPER" compare "$SRC" "$MP"

step "random preads (4 threads)"
files=("$BIG" sizes/max_plus1 sizes/two_max_plus3 sizes/avg_minus1 sizes/min_exact
        compressible/repeated-16M.bin compressible/zeros-24M.bin many/flat/file-0001.dat
        sizes/one_byte sizes/empty)
run_timeout 300 python3 "$HELPER" preads "$SRC" "$MP" "${files[@]}"

step "mmap reads"
run_timeout 300 python3 "$HELPER" mmap "$SRC" "$MP" "$BIG" sizes/avg_exact \
        compressible/text-12M.txt sizes/one_byte sizes/max_plus1

step "writes fail with EROFS"
py erofs "$MP" --file sizes/one_byte --file2 sizes/two_bytes --dir nested --emptydir empty_dir
umount_volume "$MP"

n=$(find "$CACHE" -path '*/chunks/*' -type f | wc -l)
((n > 0)) || fail "reading every file left no chunk in the cache"
log "$n chunk(s) in the cache"

step "remounting by digest with the packs moved out of the store: every chunk from the cache"
mkdir -p "$T/packs-aside"
while read -r name _size; do
        [[ "sha256:$name" == "$digest" ]] && continue
        mv "$STORE/blobs/sha256/$name" "$T/packs-aside/"
done < <(blob_list "$STORE")
mount_volume "$STORE" "test/roundtrip@$digest" "$MP" "$CACHE"
run_timeout 600 python3 "$HELPER" compare "$SRC" "$MP"
run_timeout 300 python3 "$HELPER" preads "$SRC" "$MP" "$BIG" sizes/max_plus1 --count 50 --seed 99
umount_volume "$MP"
mv "$T/packs-aside/"* "$STORE/blobs/sha256/"

step "cairn verify"
run_timeout 600 "$CAIRN" verify --store "$STORE" "$REF" >"$T/verify.out" 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify failed on an intact volume"
}
check_sanitizer_logs
