#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A dead backend: the store's server accepts TCP connections and never
# answers (tests/integration/faultproxy.py in blackhole mode, in front of
# nginx).  With a volume mounted before the outage:
#   - reads fail with EIO within the per-read deadline (plus slack), never
#     hang, even with more readers blocked than cairnfs has worker threads;
#   - meanwhile stat, ls -l, readlink and find answer from the index in
#     under a second (the kernel's dentry cache dropped, so each reaches
#     cairnfs), and statfs too: the daemon stays responsive;
#   - when the backend comes back, reads work again within seconds and the
#     same files read back whole and right.
# And a mount attempted during the outage fails within the deadline with a
# one-line error instead of hanging.
#
# The deadline comes from the mount option if cairnfs has one
# (CAIRN_TEST_DEADLINE_S, default 5 s), otherwise it is the default 30 s.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

SRC=$T/src
WWW=$T/www
STORE=$WWW/store
MP=$T/mnt
REF=test/blackhole:v1
READCHECK=$(dirname "${BASH_SOURCE[0]}")/readcheck.py
READERS=16 # more than libfuse's default of 10 worker threads
# Metadata must answer within this even while every data read is stuck.
META_LIMIT_MS=1000
# Reads must work again this soon after the backend is back.
RECOVER_LIMIT_S=10

step "generating and building $REF"
mkdir -p "$SRC/dir" "$SRC/par" "$WWW"
py randfile "$SRC/data.bin" $((16 << 20)) --seed 1
for i in $(seq -w 1 "$READERS"); do
        py randfile "$SRC/par/f$i.bin" $((2 << 20)) --seed "$((10#$i + 10))"
done
for i in $(seq -w 1 50); do
        echo "small file $i" >"$SRC/dir/s$i.txt"
done
ln -s data.bin "$SRC/link"
ln -s ../data.bin "$SRC/dir/uplink"
digest=$(build_volume "$SRC" "$STORE" "$REF")
log "manifest $digest"

# The deadline: a mount option when there is one.
deadline_opts=()
if "$CAIRN" mount --help | grep -q -- '--deadline'; then
        DEADLINE_S=${CAIRN_TEST_DEADLINE_S:-5}
        deadline_opts=(--deadline "$DEADLINE_S")
elif "$CAIRNFS" --help | grep -q 'deadline='; then
        DEADLINE_S=${CAIRN_TEST_DEADLINE_S:-5}
        deadline_opts=(-o "deadline=$DEADLINE_S")
else
        DEADLINE_S=30
fi
# The last attempt ends only at the deadline and the error still has to
# travel back through the kernel: some slack, but less than a second
# deadline, so that a read() which waits out the deadline twice (say, once
# for the kernel's read-ahead and again for its retry of one page) fails.
SLACK_S=$((DEADLINE_S / 2 + 2))
log "per-read deadline ${DEADLINE_S}s (${deadline_opts[*]:-default}), slack ${SLACK_S}s"

nginx_start "$WWW"
faultproxy_start "$NGINX_PORT" --fault-rate 0
PROXY_DIR=$FAULTPROXY_DIR
URL=$FAULTPROXY_URL/store

step "mounting through the proxy while the backend is up"
mount_volume "$URL" "$REF" "$MP" "$T/cache" "${deadline_opts[@]}"
DAEMON=${_mount_pid[$MP]}

step "the backend becomes a blackhole"
faultproxy_control "$PROXY_DIR" mode=blackhole
rc=0
curl -s -o /dev/null --max-time 2 "$URL/refs/test/blackhole/v1" || rc=$?
((rc == 28)) || fail "the blackholed proxy answered (curl exit $rc, expected 28: timeout)"

# now_ms: monotonic enough for our purpose.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# meta_op DESC CMD...: runs CMD, fails if it errs or takes over META_LIMIT_MS;
# keeps the slowest time in $worst.
worst=0
meta_op() {
        local desc=$1 t0 t1 rc=0
        shift
        t0=$(now_ms)
        timeout -k 2 10 "$@" >/dev/null 2>"$T/meta.err" || rc=$?
        t1=$(now_ms)
        if ((rc != 0)); then
                cat "$T/meta.err" >&2
                fail "during the outage: $desc failed with $rc after $((t1 - t0)) ms"
        fi
        ((t1 - t0 <= META_LIMIT_MS)) ||
                fail "during the outage: $desc took $((t1 - t0)) ms (limit $META_LIMIT_MS ms)"
        ((t1 - t0 <= worst)) || worst=$((t1 - t0))
}

step "reads during the outage: $((READERS + 1)) readers, each must get EIO within the deadline"
pids=()
kill_readers() {
        local p
        for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
at_exit kill_readers
t_start=$(now_ms)
python3 "$READCHECK" "$SRC" "$MP" data.bin --must-fail \
        --max-read-seconds $((DEADLINE_S + SLACK_S)) >"$T/read-data.json" 2>"$T/read-data.err" &
data_pid=$!
pids+=("$data_pid")
par_files=()
for f in "$SRC"/par/*; do par_files+=("par/${f##*/}"); done
python3 "$READCHECK" "$SRC" "$MP" "${par_files[@]}" --must-fail \
        --max-read-seconds $((DEADLINE_S + SLACK_S)) >"$T/read-par.json" 2>"$T/read-par.err" &
par_pid=$!
pids+=("$par_pid")
sleep 1 # let every reader block in the daemon

step "metadata answers while every reader is stuck"
rounds=0
while kill -0 "$data_pid" 2>/dev/null || kill -0 "$par_pid" 2>/dev/null; do
        # Drop dentries and inodes, so that each lookup goes to cairnfs.
        echo 2 >/proc/sys/vm/drop_caches
        meta_op "stat data.bin" stat "$MP/data.bin"
        meta_op "ls -l dir" ls -l "$MP/dir"
        meta_op "readlink link" readlink "$MP/link"
        meta_op "readlink dir/uplink" readlink "$MP/dir/uplink"
        meta_op "stat of 50 files" stat "$MP"/dir/s*.txt
        meta_op "find" find "$MP" -printf '%s %m %l\n'
        meta_op "statfs" stat -f "$MP"
        rounds=$((rounds + 1))
        (($(now_ms) - t_start < (DEADLINE_S + SLACK_S + 10) * 1000)) || break
        sleep 0.5
done
log "metadata: $rounds round(s) of 7 operations during the outage, slowest ${worst} ms"
((rounds >= 1)) || fail "the readers finished before any metadata could be checked"
kill -0 "$DAEMON" 2>/dev/null || fail "cairnfs (pid $DAEMON) died during the outage"

rc_data=0
rc_par=0
wait "$data_pid" || rc_data=$?
wait "$par_pid" || rc_par=$?
pids=()
for what in data par; do
        if [[ -s "$T/read-$what.err" ]]; then cat "$T/read-$what.err" >&2; fi
done
((rc_data == 0)) ||
        fail "data.bin during the outage: not EIO within ${DEADLINE_S}s + ${SLACK_S}s (see above)"
((rc_par == 0)) ||
        fail "par/* during the outage: not EIO within ${DEADLINE_S}s + ${SLACK_S}s (see above)"
slowest=$(python3 -c 'import json, sys
print(max(r["seconds"] for p in sys.argv[1:] for r in json.load(open(p))["files"].values()))' \
        "$T/read-data.json" "$T/read-par.json")
log "all $((READERS + 1)) readers got EIO; the slowest after ${slowest}s"

step "a mount attempted during the outage fails within the deadline"
mkdir -p "$T/mnt2"
t0=$(now_ms)
expect_failure "mount from a blackhole" "$CAIRN" mount --store "$URL" "$REF" "$T/mnt2" \
        --cache-dir "$T/cache2" "${deadline_opts[@]}"
t1=$(now_ms)
expect_one_line_error "mount from a blackhole"
! is_mounted "$T/mnt2" || fail "a failed mount left $T/mnt2 mounted"
# The ref and the manifest are each one request with its own deadline.
(((t1 - t0) / 1000 <= 2 * DEADLINE_S + SLACK_S)) ||
        fail "mount from a blackhole took $(((t1 - t0) / 1000))s"
log "mount from a blackhole failed after $(((t1 - t0) / 1000))s"

step "the backend comes back: the same reads succeed"
faultproxy_control "$PROXY_DIR" mode=normal
t_back=$(now_ms)
curl -s -o /dev/null --max-time 5 "$URL/refs/test/blackhole/v1" ||
        fail "the proxy did not come back to normal mode"
# cairnfs may go on failing fast for a moment, until its next probe of the
# store answers; a read must work again within a few seconds.
recovered=0
while (($(now_ms) - t_back < RECOVER_LIMIT_S * 1000)); do
        if python3 "$READCHECK" "$SRC" "$MP" data.bin --must-succeed data.bin >/dev/null 2>&1; then
                recovered=1
                break
        fi
        sleep 0.2
done
((recovered)) || fail "reads still fail ${RECOVER_LIMIT_S}s after the backend came back"
log "reads work again $(($(now_ms) - t_back)) ms after the backend came back"
must=(--must-succeed data.bin)
for f in "${par_files[@]}"; do must+=(--must-succeed "$f"); done
run_timeout 120 python3 "$READCHECK" "$SRC" "$MP" data.bin "${par_files[@]}" "${must[@]}" \
        >"$T/read-after.json" || fail "after the backend came back, reads did not all succeed"
kill -0 "$DAEMON" 2>/dev/null || fail "cairnfs died"
run_timeout 120 python3 "$HELPER" compare "$SRC" "$MP"
umount_volume "$MP"

faultproxy_stop "$PROXY_DIR"
python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print("proxy: %d requests answered, %d requests and %d connections swallowed"
      % (d["requests"], d["blackholed_requests"], d["blackholed_connections"]))' \
        "$PROXY_DIR/stats.json" >&2
check_sanitizer_logs
