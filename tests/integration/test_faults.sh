#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Never a wrong byte: a volume with a 1 GiB random file (and smaller ones,
# compressible and not) is served by nginx behind tests/integration/
# faultproxy.py, which breaks 10% of the responses with every kind of fault
# it knows (503, 429, resets and stalls mid-body, truncated bodies, a wrong
# Content-Range, a 200 for a range request, a flipped byte).  Through a
# mount of it:
#   0. a range answered with a 200 and the whole 1 GiB pack: the read gets
#      the right bytes or EIO, and the client stops reading early (caps);
#   1. every file is read whole, in parallel, while random preads hit the
#      big file: every read returns the source's bytes or fails with EIO,
#      and the 1 GiB file reads completely (retries absorb 10% faults);
#   2. each fault kind alone, on every response, over a volume not read
#      yet: the read returns the right bytes or EIO, within the deadline;
#   3. faults off: those files now read completely (nothing poisoned);
#   4. every chunk the cache holds hashes to its name, and a remount from
#      the same cache straight from nginx compares equal with the source.
# The fault counts are printed; every kind must have been injected.
#
# Environment: CAIRN_FAULT_SEED (default 1), CAIRN_FAULT_RATE (0.1),
# CAIRN_TEST_BIG_MIB (1024).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

SRC=$T/src
WWW=$T/www
STORE=$WWW/store
MP=$T/mnt
CACHE=$T/cache
REF=test/faults:v1
SEED=${CAIRN_FAULT_SEED:-1}
RATE=${CAIRN_FAULT_RATE:-0.1}
BIG_MIB=${CAIRN_TEST_BIG_MIB:-1024}
KINDS=(503 429 reset stall truncate wrong-range full-200 flip)
# Far longer than the fetch engine's stall limit (5 s of under 1 KiB/s): a
# stalled attempt must be given up and retried, not waited out.
STALL_S=20
# Per-read deadline (30 s by default) plus room for the last attempt.
READ_LIMIT_S=45
READCHECK=$(dirname "${BASH_SOURCE[0]}")/readcheck.py

step "generating the source ($BIG_MIB MiB random file and smaller ones)"
mkdir -p "$SRC/sub" "$WWW"
head -c $((BIG_MIB << 20)) /dev/urandom >"$SRC/big.bin"
py randfile "$SRC/medium.bin" $((40 << 20)) --seed 2
py randfile "$SRC/sub/odd.bin" $(((3 << 20) + 17)) --seed 3
python3 -c 'import sys
line = b"every byte must be right, or the read must fail with EIO\n"
sys.stdout.buffer.write((line * (12 * 1048576 // len(line) + 1))[:12 * 1048576])' \
        >"$SRC/sub/text.txt"
printf 'x' >"$SRC/one_byte"
: >"$SRC/empty"
# A volume of its own for each fault kind, read only while that kind is on:
# its own pack, so that no read-ahead of another file can have cached it.
for i in "${!KINDS[@]}"; do
        mkdir -p "$T/src-${KINDS[i]}"
        py randfile "$T/src-${KINDS[i]}/data.bin" $(((6 << 20) + 5)) --seed $((100 + i))
done
files=(big.bin medium.bin sub/odd.bin sub/text.txt one_byte empty)

step "building $REF and one volume for each fault kind"
digest=$(build_volume "$SRC" "$STORE" "$REF")
log "manifest $digest"
for k in "${KINDS[@]}"; do
        build_volume "$T/src-$k" "$STORE" "test/faults-$k:v1" >/dev/null
done

step "nginx behind faultproxy: rate $RATE, all kinds, seed $SEED"
nginx_start "$WWW"
faultproxy_start "$NGINX_PORT" --fault-rate "$RATE" --faults all --seed "$SEED" \
        --stall-seconds "$STALL_S"
PROXY_DIR=$FAULTPROXY_DIR
URL=$FAULTPROXY_URL/store

# stats: the proxy's counts so far in $PROXY_DIR/stats.json (SIGUSR2 writes them).
stats() {
        kill -USR2 "$FAULTPROXY_PID"
        sleep 0.3
}
# fault_count KIND
fault_count() {
        python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["faults"][sys.argv[2]])' \
                "$PROXY_DIR/stats.json" "$1"
}
fault_summary() {
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%d" % kv for kv in sorted(d["faults"].items())),
      "(%d requests, %d passed)" % (d["requests"], d["passed"]))' "$PROXY_DIR/stats.json"
}

step "mounting through the proxy"
mount_volume "$URL" "$REF" "$MP" "$CACHE"

step "0. a 200 with the whole $BIG_MIB MiB pack instead of a range: read only up to a cap"
faultproxy_control "$PROXY_DIR" fault_rate=1 faults=full-200
run_timeout 120 python3 "$HELPER" pread1 "$SRC/big.bin" "$MP/big.bin" $(((BIG_MIB << 20) * 2 / 3)) \
        4096 >"$T/full200.json"
faultproxy_control "$PROXY_DIR" "fault_rate=$RATE" faults=all "stall_seconds=$STALL_S"
stats
python3 - "$T/full200.json" "$PROXY_DIR/stats.json" <<'EOF' || fail "a 200 for a range was mishandled"
import json, sys
r = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2]))
n, sent = d["faults"]["full-200"], d["fault_body_bytes"]["full-200"]
print(f"  pread: {r}; {n} whole-object answers, {sent} body bytes sent", file=sys.stderr)
ok = True
if r["errno"] not in (0, 5) or (r["errno"] == 0 and not r["match"]):
    print("a pread answered by a 200 with the whole object returned wrong bytes or "
          "another error than EIO", file=sys.stderr)
    ok = False
# The proxy counts what it wrote into socket buffers, a few MiB more than read.
if n == 0 or sent / n > 64 * 1048576:
    print(f"the client read {sent // max(n, 1)} bytes of each whole-object answer: "
          "its reads of the network are not capped", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
EOF

step "1. reading every file whole while preads hit big.bin"
rc=0
run_timeout 900 python3 "$READCHECK" "$SRC" "$MP" "${files[@]}" --must-succeed big.bin \
        --preads-file big.bin --preads 150 --pread-threads 2 --seed "$SEED" \
        --max-read-seconds "$READ_LIMIT_S" >"$T/phase1.json" || rc=$?
python3 - "$T/phase1.json" <<'EOF' >&2 || true
import json, sys
d = json.load(open(sys.argv[1]))
for rel, r in sorted(d["files"].items()):
    print(f"  {rel}: {r.get('read')} of {r.get('size')} bytes, {r.get('error') or 'ok'}, "
          f"{r.get('seconds')}s (slowest read {r.get('slowest_read_s')}s)")
p = d["preads"]
print(f"  preads of big.bin: {p['done']} done, {p['matched']} matched, {p['eio']} EIO")
EOF
((rc == 0)) || fail "phase 1: a read returned wrong bytes, another error than EIO, or too little"
stats
log "faults so far: $(fault_summary)"

step "2. one fault kind on every response, each over a volume not read yet"
problems=()
faultproxy_control "$PROXY_DIR" fault_rate=0
for k in "${KINDS[@]}"; do
        mount_volume "$URL" "test/faults-$k:v1" "$T/mnt-$k" "$CACHE"
done
for k in "${KINDS[@]}"; do
        stats
        before=$(fault_count "$k")
        faultproxy_control "$PROXY_DIR" fault_rate=1 "faults=$k" "stall_seconds=$STALL_S"
        rc=0
        t0=$(date +%s)
        run_timeout 120 python3 "$READCHECK" "$T/src-$k" "$T/mnt-$k" data.bin \
                --max-read-seconds "$READ_LIMIT_S" >"$T/kind-$k.json" || rc=$?
        t1=$(date +%s)
        faultproxy_control "$PROXY_DIR" fault_rate=0
        # Go on with the other kinds: one run shows every kind that fails.
        ((rc == 0)) || problems+=("fault '$k' on every response: a wrong byte, another error than EIO, or a read over ${READ_LIMIT_S}s")
        stats
        after=$(fault_count "$k")
        outcome=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))["files"]["data.bin"]
print("%d of %d bytes, then %s" % (r["read"], r["size"], r["error"] or "EOF"))' "$T/kind-$k.json")
        log "  $k: $((after - before)) injected, $((t1 - t0))s, $outcome"
        ((after > before)) || problems+=("fault '$k' was never injected: the test did not test it")
        if [[ $k == stall ]] && ((after - before < 2)); then
                problems+=("a stalled response was waited out (${STALL_S}s) instead of retried")
        fi
done

step "3. faults off: the same files now read completely"
for k in "${KINDS[@]}"; do
        run_timeout 120 python3 "$READCHECK" "$T/src-$k" "$T/mnt-$k" data.bin \
                --must-succeed data.bin >"$T/after-$k.json" ||
                fail "after the '$k' faults stopped, data.bin did not read back completely"
        umount_volume "$T/mnt-$k"
done
must=()
for f in "${files[@]}"; do must+=(--must-succeed "$f"); done
run_timeout 300 python3 "$READCHECK" "$SRC" "$MP" "${files[@]}" "${must[@]}" >"$T/phase3.json" ||
        fail "after the faults stopped, a file did not read back completely and correctly"
umount_volume "$MP"

step "fault counts"
faultproxy_stop "$PROXY_DIR"
python3 - "$PROXY_DIR/stats.json" <<'EOF' >&2
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  {d['requests']} requests, {d['injected']} faults injected, {d['passed']} passed through")
for k, v in d["faults"].items():
    print(f"  {k:>12}: {v}")
EOF
python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
missing = [k for k, v in d["faults"].items() if v == 0]
sys.exit(1 if missing else 0)' "$PROXY_DIR/stats.json" || fail "some fault kind was never injected"

step "4. the cache holds only verified chunks"
# The entry format is in docs/FORMAT.md ("The chunk cache"): the chunk,
# whose SHA-256 is its name, zero padding and a 16-byte trailer (magic,
# size, CRC-32C), in a whole number of 4 KiB blocks.
n=$(python3 - "$CACHE" <<'EOF'
import hashlib, os, struct, sys
n = bad = 0
for dp, _dns, fns in os.walk(os.path.join(sys.argv[1], "chunks")):
    for name in fns:
        with open(os.path.join(dp, name), "rb") as f:
            data = f.read()
        n += 1
        size = struct.unpack_from("<I", data, len(data) - 8)[0] if len(data) >= 16 else -1
        if data[-16:-8] != b"CAIRNCE2" or (size + 16 + 4095) // 4096 * 4096 != len(data) or \
                hashlib.sha256(data[:size]).hexdigest() != name:
            bad += 1
            print(f"corrupt cache entry {os.path.join(dp, name)}", file=sys.stderr)
if bad:
    print(f"{bad} of {n} cache entries are corrupt", file=sys.stderr)
    sys.exit(1)
print(n)
EOF
) || fail "the cache holds a chunk that is not what its name says"
((n > 0)) || fail "the cache holds no chunk after reading everything"
log "$n cache entries, all intact"

step "remount from the same cache, straight from nginx: compare everything"
mount_volume "$NGINX_URL/store" "$REF" "$MP" "$CACHE"
run_timeout 600 python3 "$HELPER" compare "$SRC" "$MP"
umount_volume "$MP"
check_sanitizer_logs
if ((${#problems[@]})); then
        for p in "${problems[@]}"; do log "phase 2: $p"; done
        fail "${#problems[@]} problem(s) in phase 2 (above)"
fi
