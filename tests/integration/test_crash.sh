#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Crash safety of the chunk cache: rounds of `kill -9` of `cairn warm` or of
# the cairnfs daemon at a random moment while they fetch from nginx and
# write cache entries, each followed by a fresh mount over the same cache
# directory and a full read compared byte for byte with the source.  Any
# entry a killed process left half-written, or any accounting it left
# behind, must never turn into a wrong byte or a failed read.
#
# CAIRN_CRASH_ROUNDS (default 10) sets the number of rounds; the benchmark
# bench/crash.sh runs 50.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

ROUNDS=${CAIRN_CRASH_ROUNDS:-10}
SRC=$T/src
WWW=$T/www
CACHE=$T/cache
MP=$T/mnt
REF=test/crash:v1
MiB=$((1024 * 1024))

mkdir -p "$SRC/a/b" "$WWW"
py randfile "$SRC/weights.bin" $((96 * MiB)) --seed 31
py randfile "$SRC/a/shard.bin" $((24 * MiB + 17)) --seed 32
py randfile "$SRC/a/b/small.bin" 4099 --seed 33
step "building $REF (small chunks: many cache entries)"
build_volume "$SRC" "$WWW/store" "$REF" --chunk-min 64K --chunk-avg 256K --chunk-max 1M >/dev/null
nginx_start "$WWW" --no-access-log
URL=$NGINX_URL/store

rand_delay() { python3 -c "import random; print(round(random.uniform(0.05, ${1}), 3))"; }

killed_warm=0
killed_daemon=0
for ((round = 1; round <= ROUNDS; round++)); do
        # Evict a random share of the cache (LRU), so that every round has
        # chunks to fetch and entries to write when the kill lands.
        keep=$((RANDOM % 40))
        "$CAIRN" cache prune --cache-dir "$CACHE" --cache-size $((keep * MiB + 4096)) >/dev/null 2>&1 ||
                [[ ! -d "$CACHE" ]] || fail "cairn cache prune failed"
        if ((RANDOM % 2)); then
                delay=$(rand_delay 0.4)
                "$CAIRN" warm --store "$URL" "$REF" --cache-dir "$CACHE" --parallel 4 \
                        >/dev/null 2>"$T/warm.err" &
                pid=$!
                sleep "$delay"
                if kill -KILL "$pid" 2>/dev/null; then
                        killed_warm=$((killed_warm + 1))
                        log "round $round: killed cairn warm after ${delay}s (cache kept ${keep} MiB)"
                else
                        log "round $round: cairn warm finished within ${delay}s"
                fi
                wait "$pid" 2>/dev/null || true
        else
                delay=$(rand_delay 1.5)
                mount_volume "$URL" "$REF" "$MP" "$CACHE"
                pid=${_mount_pid[$MP]}
                (cat "$MP/weights.bin" "$MP/a/shard.bin" >/dev/null 2>&1 || true) &
                reader=$!
                sleep "$delay"
                kill -KILL "$pid" 2>/dev/null && killed_daemon=$((killed_daemon + 1))
                wait "$reader" 2>/dev/null || true
                # The kernel keeps a dead FUSE mount until it is detached.
                umount -l "$MP" 2>/dev/null || fusermount3 -uz "$MP" 2>/dev/null || true
                _forget_mount "$MP"
                log "round $round: killed cairnfs (pid $pid) after ${delay}s"
        fi
        mount_volume "$URL" "$REF" "$MP" "$CACHE"
        run_timeout 300 python3 "$HELPER" compare "$SRC" "$MP" ||
                fail "round $round: the mount after a kill -9 differs from the source"
        umount_volume "$MP"
done
entries=$(find "$CACHE/chunks" -type f | wc -l)
log "$ROUNDS rounds: $killed_warm cairn warm and $killed_daemon cairnfs killed; $entries cache entries; every read matched"

step "the cache verifies clean after all the kills"
"$CAIRN" cache verify --cache-dir "$CACHE" >"$T/verify.out" 2>&1 || {
        cat "$T/verify.out" >&2
        fail "cairn cache verify failed after the crash rounds"
}
# Entries are renamed into place only once complete: a kill can leave
# temporary files, never a damaged entry under its final name.
grep -q ": ok," "$T/verify.out" || {
        cat "$T/verify.out" >&2
        fail "cache verify found damaged entries after the kills"
}
