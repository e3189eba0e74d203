#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The chunk cache from the command line:
#   - every new flag of cairn (store flags, --cache-size, --cache-min-free,
#     cairn cache) and every new cairnfs -o option refuses a bad value with
#     exit status 2 and one line on stderr, before touching anything;
#   - `cairn mount --cache-size 8M` reaching cairnfs: a 64 MiB file read
#     through the mount matches its source byte for byte while the cache
#     directory, sampled all along, never holds more than 8 MiB; the cache
#     sits on its own tmpfs where we may mount one, so that statvfs() gives
#     the exact bytes in use at each instant (see cachewatch.py);
#   - --cache-min-free reaching cairnfs: on a 32 MiB tmpfs with 75% to keep
#     free, the same read leaves the cache far below what the default 10%
#     floor would let it take;
#   - store flags reaching cairnfs: an http store mounted with
#     --connections/--deadline/--insecure, an s3 store's --endpoint named in
#     the failure and its --deadline bounding it;
#   - `cairn cache stats` agrees with the files on disk; `cairn cache
#     verify` removes an entry with a flipped byte and one whose CRC was
#     rewritten to match (only the SHA-256 re-hash can tell), exits 0 with
#     the count, and a remount reads everything right; `cairn cache prune`
#     evicts down to a size, and --all leaves no entry.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

WATCH=$CAIRN_TESTS_SRC/integration/cachewatch.py
SRC=$T/src
WWW=$T/www
STORE=$WWW/store
MP=$T/mnt
REF=test/cache:v1
LIMIT=$((8 << 20))
BIG_BYTES=$((64 << 20))

# expect_usage DESCRIPTION CMD...: CMD exits 2 with one line on stderr.
expect_usage() {
        local desc=$1 rc=0
        shift
        run_timeout 60 "$@" >"$T/last.out" 2>"$T/last.err" || rc=$?
        if ((rc != 2)); then
                cat "$T/last.err" >&2
                fail "$desc: exited with $rc, expected 2 (usage error)"
        fi
        expect_one_line_error "$desc"
}

# A tmpfs of $2 for the cache at $1, when we may mount one; else a plain directory.
cache_fs() {
        mkdir -p "$1"
        if mount -t tmpfs -o "size=$2,mode=0755" cairn-test-cache "$1" 2>/dev/null; then
                return 0
        fi
        log "cannot mount a tmpfs at $1: measuring the cache by walking it only"
        return 1
}

release_cache_fs() {
        if is_mounted "$1"; then
                umount "$1" || fail "cannot unmount the tmpfs at $1"
        fi
}

# start_watch CACHE OUT [--statvfs]: samples CACHE in the background until
# stop_watch; returns once the first sample is taken.  Sets WATCHER.
start_watch() {
        local cache=$1 out=$2 i
        shift 2
        rm -f "$T/stop" "$T/ready"
        python3 "$WATCH" watch "$cache" "$T/stop" "$out" --ready "$T/ready" "$@" &
        WATCHER=$!
        for ((i = 0; i < 300; i++)); do
                [[ -e "$T/ready" ]] && return 0
                kill -0 "$WATCHER" 2>/dev/null || fail "the cache watcher died"
                sleep 0.05
        done
        fail "the cache watcher took no sample in 15s"
}

stop_watch() {
        touch "$T/stop"
        wait "$WATCHER" || fail "the cache watcher failed"
}

# The cairnfs command line of mountpoint $1, one argument per line.
daemon_args() { tr '\0' '\n' <"/proc/${_mount_pid[$1]}/cmdline"; }

step "generating and building $REF (64 MiB file, 256 KiB average chunks)"
mkdir -p "$SRC/small" "$WWW"
py randfile "$SRC/big.bin" "$BIG_BYTES" --seed 7
for i in 1 2 3; do
        py randfile "$SRC/small/f$i.bin" $((300 << 10)) --seed "$((i + 20))"
done
digest=$(build_volume "$SRC" "$STORE" "$REF" --chunk-avg 256K)
log "manifest $digest"

step "bad values: exit 2 and one line, nothing mounted"
mkdir -p "$MP"
mnt=("$CAIRN" mount --store "$STORE" "$REF" "$MP" --cache-dir "$T/unused-cache")
expect_usage "--cache-size abc" "${mnt[@]}" --cache-size abc
expect_usage "--cache-size 0" "${mnt[@]}" --cache-size 0
expect_usage "--cache-size 10Q" "${mnt[@]}" --cache-size 10Q
expect_usage "--cache-min-free 0" "${mnt[@]}" --cache-min-free 0
expect_usage "--cache-min-free 91" "${mnt[@]}" --cache-min-free 91
expect_usage "--cache-min-free -5" "${mnt[@]}" --cache-min-free -5
expect_usage "--deadline 0" "${mnt[@]}" --deadline 0
expect_usage "--deadline 3601" "${mnt[@]}" --deadline 3601
expect_usage "--deadline 1.5x" "${mnt[@]}" --deadline 1.5x
expect_usage "--connections 0" "${mnt[@]}" --connections 0
expect_usage "--connections 257" "${mnt[@]}" --connections 257
expect_usage "--ca-file that does not exist" "${mnt[@]}" --ca-file "$T/no-such-ca.pem"
expect_usage "--endpoint for a local store" "${mnt[@]}" --endpoint http://127.0.0.1:9
expect_in_stderr "--endpoint for a local store" "s3://"
expect_usage "--insecure for a local store" "${mnt[@]}" --insecure
expect_usage "--path-style and --virtual-hosted" \
        "$CAIRN" inspect --store s3://bucket/p "$REF" --path-style --virtual-hosted
expect_usage "--endpoint ftp://" "$CAIRN" inspect --store s3://bucket/p "$REF" \
        --endpoint ftp://127.0.0.1
expect_usage "--endpoint with a path" "$CAIRN" inspect --store s3://bucket/p "$REF" \
        --endpoint http://127.0.0.1:9000/some/path
expect_usage "--endpoint with credentials" "$CAIRN" inspect --store s3://bucket/p "$REF" \
        --endpoint http://AKIDEXAMPLE:s3cr3tv4lue@127.0.0.1:9000
if grep -q s3cr3tv4lue "$T/last.err"; then
        fail "the refusal of an endpoint with credentials repeats the secret"
fi
expect_usage "--region with a space" "$CAIRN" verify --store s3://bucket/p "$REF" \
        --region 'us east'
expect_usage "--aws-profile ''" "$CAIRN" build "$SRC" --store s3://bucket/p --tag "$REF" \
        --aws-profile ''
expect_usage "--connections x for build" "$CAIRN" build "$SRC" --store "$T/other-store" \
        --tag "$REF" --connections x
expect_usage "cache without a command" "$CAIRN" cache
expect_usage "cache with an unknown command" "$CAIRN" cache frobnicate
expect_usage "cache stats --all" "$CAIRN" cache stats --all --cache-dir "$T/unused-cache"
expect_usage "cache verify --cache-size" "$CAIRN" cache verify --cache-size 1M
expect_usage "cache prune --all --cache-size" "$CAIRN" cache prune --all --cache-size 1M
expect_usage "cache prune --cache-size x" "$CAIRN" cache prune --cache-size x
expect_usage "cache stats extra argument" "$CAIRN" cache stats extra
fs=("$CAIRNFS" "$STORE#$REF" "$MP" -o "cache_dir=$T/unused-cache")
expect_usage "cairnfs cache_size=abc" "${fs[@]}" -o cache_size=abc
expect_usage "cairnfs cache_min_free=95" "${fs[@]}" -o cache_min_free=95
expect_usage "cairnfs deadline=0" "${fs[@]}" -o deadline=0
expect_usage "cairnfs connections=many" "${fs[@]}" -o connections=many
expect_usage "cairnfs endpoint= for a local store" "${fs[@]}" -o endpoint=http://127.0.0.1:9
expect_usage "cairnfs addressing=sideways" "$CAIRNFS" "s3://bucket/p#$REF" "$MP" \
        -o addressing=sideways
expect_usage "cairnfs ca_file= missing" "$CAIRNFS" "http://127.0.0.1:9/s#$REF" "$MP" \
        -o "ca_file=$T/no-such-ca.pem"
! is_mounted "$MP" || fail "a refused mount left $MP mounted"
[[ ! -e "$T/unused-cache" ]] || fail "a refused command created the cache directory"

step "cairn cache refuses what is not a cache, and creates nothing"
expect_failure "cache stats of a missing directory" "$CAIRN" cache stats --cache-dir "$T/nope"
expect_one_line_error "cache stats of a missing directory"
[[ ! -e "$T/nope" ]] || fail "cache stats created $T/nope"
expect_failure "cache verify of a plain directory" "$CAIRN" cache verify --cache-dir "$SRC"
expect_one_line_error "cache verify of a plain directory"
expect_in_stderr "cache verify of a plain directory" "not a cairn cache"
[[ ! -e "$SRC/chunks" && ! -e "$SRC/usage" ]] || fail "cache verify laid out a cache in $SRC"

step "mount with --cache-size 8M; read 64 MiB while sampling the cache"
CACHE=$T/cache
statvfs=()
if cache_fs "$CACHE" 64m; then
        statvfs=(--statvfs)
fi
mount_volume "$STORE" "$REF" "$MP" "$CACHE" --cache-size 8M
daemon_args "$MP" | grep -q "cache_size=$LIMIT" ||
        fail "cairnfs was not given cache_size=$LIMIT: $(daemon_args "$MP" | tr '\n' ' ')"
base_used=0
if ((${#statvfs[@]})); then
        # The usage page and the manifest are not chunk entries; nothing else is there yet.
        base_used=$(python3 -c 'import os,sys; s=os.statvfs(sys.argv[1]); print((s.f_blocks-s.f_bfree)*s.f_frsize)' "$CACHE")
        log "cache filesystem in use before reading: $base_used bytes"
        ((base_used <= 1 << 20)) || fail "the cache holds $base_used bytes before any read"
fi
start_watch "$CACHE" "$T/watch.json" "${statvfs[@]}"
rc=0
run_timeout 300 cmp "$SRC/big.bin" "$MP/big.bin" || rc=$?
stop_watch
((rc == 0)) || fail "big.bin read through the mount differs from its source (cmp: $rc)"
log "watch: $(cat "$T/watch.json")"
samples=$(py jsonget "$T/watch.json" samples)
certified=$(py jsonget "$T/watch.json" max_walk_certified)
raw=$(py jsonget "$T/watch.json" max_walk_raw)
((samples >= 20)) || fail "only $samples samples of the cache while reading"
((certified <= LIMIT)) ||
        fail "the cache held $certified bytes of entries at one instant, over the 8 MiB limit"
# The read must have used the cache, or the limit proved nothing.
((certified >= LIMIT / 2)) || fail "the cache never held more than $certified bytes"
if ((raw > LIMIT)); then
        log "note: a raw walk summed $raw bytes (walks are not instants; not asserted)"
fi
if ((${#statvfs[@]})); then
        used=$(py jsonget "$T/watch.json" max_fs_used)
        ((used - base_used <= LIMIT)) ||
                fail "the cache filesystem held $((used - base_used)) bytes of entries, over 8 MiB"
        log "largest cache: $((used - base_used)) bytes in use (exact), $certified in entries seen"
fi
cmp "$SRC/small/f2.bin" "$MP/small/f2.bin" || fail "small/f2.bin differs"
umount_volume "$MP"

step "cairn cache stats agrees with the files on disk"
run_timeout 60 "$CAIRN" cache stats --cache-dir "$CACHE" --json >"$T/stats.json"
python3 "$WATCH" count "$CACHE" >"$T/count.json"
entries=$(py jsonget "$T/stats.json" entries)
bytes=$(py jsonget "$T/stats.json" bytes)
[[ "$entries" == "$(py jsonget "$T/count.json" entries)" ]] ||
        fail "stats says $entries entries, chunks/ holds $(py jsonget "$T/count.json" entries)"
((entries > 4)) || fail "stats: only $entries entries after reading 64 MiB"
((bytes <= LIMIT)) || fail "stats: $bytes bytes, over the 8 MiB limit"
accounted=$(py jsonget "$T/stats.json" accounted_bytes)
((accounted == bytes)) || fail "stats: accounted $accounted bytes, the entries take $bytes"
for key in manifests manifest_bytes temp_files; do
        py jsonget "$T/stats.json" "$key" >/dev/null
done
run_timeout 60 "$CAIRN" cache stats --cache-dir "$CACHE" >"$T/stats.txt"
grep -qE "^entries: +$entries\$" "$T/stats.txt" || {
        cat "$T/stats.txt" >&2
        fail "cairn cache stats does not show $entries entries"
}

step "cairn cache verify removes a flipped byte, with and without a matching CRC"
mapfile -t files < <(find "$CACHE/chunks" -type f | sort)
((${#files[@]} >= 3)) || fail "need three cache entries, found ${#files[@]}"
python3 "$WATCH" damage "${files[0]}"
python3 "$WATCH" damage "${files[1]}" --fix-crc
run_timeout 300 "$CAIRN" cache verify --cache-dir "$CACHE" >"$T/verify.out" 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn cache verify exited with an error after repairing"
}
log "verify: $(cat "$T/verify.out")"
grep -qE "^verified $entries entries: 2 damaged entries removed" "$T/verify.out" ||
        fail "cairn cache verify does not report 2 damaged entries of $entries"
[[ ! -e "${files[0]}" ]] || fail "verify kept the entry with a bad CRC"
[[ ! -e "${files[1]}" ]] || fail "verify kept the entry whose CRC matches its damaged data"
[[ -e "${files[2]}" ]] || fail "verify removed an intact entry"
run_timeout 300 "$CAIRN" cache verify --cache-dir "$CACHE" --json >"$T/verify.json"
[[ "$(py jsonget "$T/verify.json" damaged_removed)" == 0 ]] ||
        fail "a second verify still finds damage"
[[ "$(py jsonget "$T/verify.json" checked)" == "$((entries - 2))" ]] ||
        fail "the second verify checked $(py jsonget "$T/verify.json" checked) entries, expected $((entries - 2))"
run_timeout 60 "$CAIRN" cache stats --cache-dir "$CACHE" --json >"$T/stats2.json"
[[ "$(py jsonget "$T/stats2.json" accounted_bytes)" == "$(py jsonget "$T/stats2.json" bytes)" ]] ||
        fail "verify left the size counter out of step with the entries"
mount_volume "$STORE" "$REF" "$MP" "$CACHE" --cache-size 8M
run_timeout 300 cmp "$SRC/big.bin" "$MP/big.bin" || fail "big.bin differs after cache verify"
umount_volume "$MP"

step "cairn cache prune: down to 2M, then --all"
run_timeout 60 "$CAIRN" cache prune --cache-dir "$CACHE" --cache-size 2M >"$T/prune.out"
log "prune: $(cat "$T/prune.out")"
grep -qE '^evicted [1-9][0-9]* entr(y|ies) ' "$T/prune.out" || fail "prune --cache-size 2M evicted nothing"
run_timeout 60 "$CAIRN" cache stats --cache-dir "$CACHE" --json >"$T/stats3.json"
(($(py jsonget "$T/stats3.json" bytes) <= 2 << 20)) || fail "prune left more than 2 MiB"
(($(py jsonget "$T/stats3.json" entries) > 0)) || fail "prune --cache-size 2M left no entry"
run_timeout 60 "$CAIRN" cache prune --cache-dir "$CACHE" --all --json >"$T/prune.json"
[[ "$(py jsonget "$T/prune.json" entries)" == 0 ]] || fail "prune --all reports entries left"
python3 "$WATCH" count "$CACHE" >"$T/count.json"
[[ "$(py jsonget "$T/count.json" entries)" == 0 ]] ||
        fail "prune --all left $(py jsonget "$T/count.json" entries) entries in chunks/"
run_timeout 60 "$CAIRN" cache stats --cache-dir "$CACHE" --json >"$T/stats4.json"
for key in entries bytes accounted_bytes; do
        [[ "$(py jsonget "$T/stats4.json" "$key")" == 0 ]] ||
                fail "after prune --all, $key is $(py jsonget "$T/stats4.json" "$key")"
done
release_cache_fs "$CACHE"

step "--cache-min-free reaches cairnfs: 75% of a 32 MiB cache filesystem stays free"
CACHE2=$T/cache-floor
if cache_fs "$CACHE2" 32m; then
        mount_volume "$STORE" "$REF" "$MP" "$CACHE2" --cache-min-free 75
        daemon_args "$MP" | grep -q "cache_min_free=75" || fail "cairnfs was not given cache_min_free=75"
        start_watch "$CACHE2" "$T/watch2.json" --statvfs
        rc=0
        run_timeout 300 cmp "$SRC/big.bin" "$MP/big.bin" || rc=$?
        stop_watch
        ((rc == 0)) || fail "big.bin differs when read under a free-space floor"
        used=$(py jsonget "$T/watch2.json" max_fs_used)
        log "largest use of the 32 MiB cache filesystem: $used bytes"
        # The default 10% floor would let the cache take about 28 MiB here.
        ((used <= 16 << 20)) || fail "the cache took $used bytes of 32 MiB with 75% to keep free"
        ((used >= 2 << 20)) || fail "the cache took only $used bytes: the read did not use it"
        umount_volume "$MP"
        release_cache_fs "$CACHE2"
else
        log "skipping the free-space floor check: no tmpfs"
fi

step "store flags reach cairnfs: an http store with --connections, --deadline, --insecure"
nginx_start "$WWW"
mount_volume "$NGINX_URL/store" "$REF" "$MP" "$T/cache-http" --connections 2 --deadline 7 \
        --insecure
args=$(daemon_args "$MP" | tr '\n' ' ')
for want in connections=2 deadline=7 insecure; do
        [[ ",${args// /,}," == *",$want,"* ]] || fail "cairnfs was not given $want: $args"
done
n=$(grep -c 'TLS verification disabled' "$T/mount.err" || true)
((n == 1)) || {
        cat "$T/mount.err" >&2
        fail "--insecure warned $n times, expected once"
}
cmp "$SRC/small/f1.bin" "$MP/small/f1.bin" || fail "small/f1.bin differs over http"
umount_volume "$MP"

step "s3 flags reach cairnfs: --endpoint is the one tried, --deadline bounds it"
# A server that accepts connections and never answers: only the deadline ends a request.
faultproxy_start "$NGINX_PORT" --blackhole
hole=$FAULTPROXY_URL
s3=(--store s3://cairn-test/store --endpoint "$hole" --region eu-west-3 --path-style
        --deadline 3)
export AWS_ACCESS_KEY_ID=AKIDCACHETEST AWS_SECRET_ACCESS_KEY=cachetestsecretvalue
for how in inspect mount; do
        if [[ $how == inspect ]]; then
                cmd=("$CAIRN" inspect "${s3[@]}" "$REF")
        else
                cmd=("$CAIRN" mount "${s3[@]}" "$REF" "$MP" --cache-dir "$T/cache-s3")
        fi
        t0=$(date +%s%N)
        expect_failure "$how from an s3 endpoint that never answers" "${cmd[@]}"
        t1=$(date +%s%N)
        expect_one_line_error "$how from an s3 endpoint that never answers"
        expect_in_stderr "$how from an s3 endpoint that never answers" "${hole#http://}"
        if grep -q cachetestsecretvalue "$T/last.err"; then
                fail "$how: the s3 failure shows the secret key"
        fi
        ms=$(((t1 - t0) / 1000000))
        log "$how gave up after ${ms} ms"
        # The default deadline is 30 s; 3 s plus the probe's last attempt and process start.
        ((ms >= 2500 && ms <= 15000)) || fail "$how took ${ms} ms with --deadline 3"
done
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
! is_mounted "$MP" || fail "a failed s3 mount left $MP mounted"
