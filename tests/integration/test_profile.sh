#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Access profiles and background prefetch: a mount with --record-profile
# writes the order in which chunks were first read; `cairn build --profile`
# stores it with the volume and a later mount replays it into an empty
# cache by itself (prefetch=auto); `cairn warm --profile` fetches exactly
# those chunks; --prefetch=all fills the cache with the whole volume in
# the background; --prefetch=none fetches nothing unasked.  Every read
# still matches the source.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

SRC=$T/src
STORE=$T/store
MP=$T/mnt
MiB=$((1024 * 1024))
CHUNKING=(--chunk-min 64K --chunk-avg 256K --chunk-max 1M)
entries() { find "$1/chunks" -type f 2>/dev/null | wc -l; }
# wait_entries DIR N: until the cache holds at least N entries (20 s at most).
wait_entries() {
        local i
        for ((i = 0; i < 200; i++)); do
                (($(entries "$1") >= $2)) && return 0
                sleep 0.1
        done
        return 1
}

mkdir -p "$SRC/model"
py randfile "$SRC/model/weights.bin" $((32 * MiB)) --seed 41
py randfile "$SRC/model/other.bin" $((8 * MiB)) --seed 42
echo '{"layers": 2}' >"$SRC/model/config.json"
build_volume "$SRC" "$STORE" test/profile:v1 "${CHUNKING[@]}" >/dev/null

step "recording which chunks a loader reads"
mount_volume "$STORE" test/profile:v1 "$MP" "$T/cache-rec" --record-profile "$T/loader.profile"
cat "$MP/model/config.json" >/dev/null
run_timeout 60 python3 "$HELPER" pread1 "$SRC/model/weights.bin" "$MP/model/weights.bin" \
        $((20 * MiB)) $((3 * MiB)) >"$T/pread.json"
grep -q '"match": true' "$T/pread.json" || fail "the recorded read did not match: $(cat "$T/pread.json")"
umount_volume "$MP"
[[ "$(head -1 "$T/loader.profile")" == "cairn-profile 1" ]] || fail "profile has no header"
recorded=$(($(wc -l <"$T/loader.profile") - 1))
log "recorded $recorded chunk ids"
((recorded >= 8 && recorded <= 40)) ||
        fail "expected the chunks of config.json and a 3 MiB range, recorded $recorded"

step "cairn warm --profile fetches exactly the profile's chunks"
"$CAIRN" warm --store "$STORE" test/profile:v1 --cache-dir "$T/cache-warm" \
        --profile "$T/loader.profile" --json >"$T/warm.json"
fetched=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunks_fetched"])' "$T/warm.json")
((fetched == recorded)) || fail "warm --profile fetched $fetched chunks, the profile has $recorded"
"$CAIRN" warm --store "$STORE" test/profile:v1 --cache-dir "$T/cache-warm" \
        --profile "$T/loader.profile" --json >"$T/warm2.json"
again=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunks_fetched"])' "$T/warm2.json")
((again == 0)) || fail "a second warm fetched $again chunks"

step "a profile stored with the volume is replayed by the next mount"
build_volume "$SRC" "$STORE" test/profile:v2 "${CHUNKING[@]}" --profile "$T/loader.profile" >/dev/null
mount_volume "$STORE" test/profile:v2 "$MP" "$T/cache-auto"
wait_entries "$T/cache-auto" "$recorded" || fail "the stored profile was not replayed into the cache"
run_timeout 120 python3 "$HELPER" compare "$SRC" "$MP"
umount_volume "$MP"

step "--prefetch=none fetches nothing unasked, --prefetch=all fetches everything"
mount_volume "$STORE" test/profile:v2 "$MP" "$T/cache-none" --prefetch none
sleep 1
(($(entries "$T/cache-none") == 0)) || fail "--prefetch=none filled the cache"
umount_volume "$MP"
total=$("$CAIRN" inspect --store "$STORE" test/profile:v1 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["unique_chunks"])')
mount_volume "$STORE" test/profile:v1 "$MP" "$T/cache-all" --prefetch all
wait_entries "$T/cache-all" "$total" || fail "--prefetch=all cached $(entries "$T/cache-all") of $total chunks"
run_timeout 120 python3 "$HELPER" compare "$SRC" "$MP"
umount_volume "$MP"

step "a malformed profile is refused with a clear error"
printf 'not a profile\n' >"$T/bad.profile"
expect_failure "build --profile with a malformed file" \
        "$CAIRN" build "$SRC" --store "$STORE" --tag test/profile:bad --profile "$T/bad.profile"
grep -q "profile" "$T/last.err" || fail "the build error does not mention the profile"
[[ ! -e "$STORE/refs/test/profile/bad" ]] || fail "a failed build wrote a ref"
expect_failure "warm --profile with a malformed file" \
        "$CAIRN" warm --store "$STORE" test/profile:v1 --cache-dir "$T/c" --profile "$T/bad.profile"
