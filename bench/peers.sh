#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# cairn side by side with its peers, in one run, on the same data and the
# same loopback servers:
#   - data: a 1 GiB incompressible file (data.bin) and a safetensors file of
#     24 float16 matrices (peers_helper.py gen-safetensors), each a volume
#     built with `cairn build` into one directory store that nginx serves
#     (http://); data.bin also uploaded to versitygw (S3, for s3fs and
#     rclone) and `casync make`d into a casync store served by the same
#     nginx (for `casync mount`); and a 4 GiB volume for the memory checks;
#   - cold sequential reads of data.bin: cairn (mount from nginx), s3fs,
#     `rclone mount --vfs-cache-mode full`, `casync mount`, against the raw
#     ceilings `curl` (the same bytes from the same nginx) and `dd` of the
#     file on local disk;
#   - time to first byte of 4 KiB reads at 100 random 4 KiB-aligned offsets
#     of a cold file (the same offsets for every reader; p50, p99);
#   - warm: cairn with its chunk cache on disk and the page cache dropped,
#     against the libfuse passthrough_ll example (compiled here) serving the
#     same bytes from the same disk;
#   - hot: a second read through the kernel page cache, against dd of the
#     same bytes from the page cache;
#   - `cairn warm --parallel 8` of the 1 GiB volume, against curl;
#   - loading every tensor with Python's safetensors (safe_open, numpy,
#     mmap) through the mount, cold and warm, against the local file;
#   - peak resident memory (VmHWM) of cairnfs: over every mount of the run,
#     and during a 4 GiB sequential read with the default settings and with
#     --memory-limit 128M;
#   - with --cache-size 256M, the most the cache directory held while 1 GiB
#     was read through the mount.
# Each figure that the node-cache issue sets a target for is printed with
# the target and whether this run met it.
#
# "Cold" is the same for every network reader: a fresh mount, a fresh
# client cache directory where the client has one (cairn --cache-dir,
# rclone --cache-dir; s3fs and casync mount keep none by default), the page
# cache dropped, then the file(s) the server will send read back into the
# page cache, so that every server answers from memory and the figures
# compare the clients, not the disk.  The safetensors loads compare against
# local disk instead, so there nothing is pre-read: "cold" means the page
# cache dropped on both sides (nginx reads the pack from the same disk).
# Sequential and safetensors figures are the median of --runs interleaved
# runs; each sequential read is `dd bs=1M`, time-boxed (--seq-timeout: a
# slower reader is measured over what it read by then, and marked so).  The
# time to first byte, the memory and the cache-size checks run once.
# nginx's access log gives what cairn fetched for each figure, so that an
# over-fetch, or a warm read that goes to the store, shows in the table.
#
# Usage: bench/peers.sh [--build-dir DIR] [--work DIR] [--venv DIR] [--runs N]
#                       [--seq-timeout SECS] [--keep] [--write]
#   --venv DIR  Python virtual environment with safetensors and numpy
#               (default: $CAIRN_BENCH_VENV, else
#               /var/tmp/cairn-bench-peers/venv; `scripts/deps.sh --bench`
#               makes it)
#   --keep      leave the data, stores and caches in the work directory
#   --write     also replace the peers section of docs/BENCHMARKS.md
# Needs root (drops the page cache, mounts); about 7 minutes on 2 cores, and
# 14 GiB of disk in the work directory at the peak.  Installs nothing:
# scripts/deps.sh --bench does (s3fs, rclone, the venv; nginx, curl,
# casync, versitygw and libfuse3-dev come with its base set).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$repo/build
work=${TMPDIR:-/var/tmp}/cairn-bench-peers
venv=${CAIRN_BENCH_VENV:-/var/tmp/cairn-bench-peers/venv}
runs=3
seq_timeout=120
keep=0
write=0
usage() {
        echo "usage: $0 [--build-dir DIR] [--work DIR] [--venv DIR] [--runs N]" \
                "[--seq-timeout SECS] [--keep] [--write]" >&2
        exit 2
}
while (($#)); do
        case $1 in
        --build-dir) build_dir=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --venv) venv=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --seq-timeout) seq_timeout=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --write) write=1; shift ;;
        *) usage ;;
        esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$seq_timeout" =~ ^[1-9][0-9]*$ ]] || usage

die() { echo "bench: $*" >&2; exit 1; }
trap 'echo "bench: line $LINENO failed: $BASH_COMMAND" >&2' ERR
cairn=$build_dir/bin/cairn
[[ -x $cairn && -x $build_dir/bin/cairnfs ]] || die "'$build_dir/bin' has no cairn and cairnfs (build first)"
((EUID == 0)) || die "needs root (it drops the page cache and mounts)"
for tool in curl nginx casync s3fs rclone gcc pkg-config fusermount3 openssl python3 timeout; do
        command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh --bench)"
done
versitygw=$(command -v versitygw || echo /usr/local/bin/versitygw)
[[ -x $versitygw ]] || die "versitygw is not installed (scripts/deps.sh)"
py=$venv/bin/python
"$py" -c 'import safetensors, numpy' 2>/dev/null ||
        die "no Python with safetensors and numpy in '$venv' (scripts/deps.sh --bench makes it)"
passthrough_src=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
[[ -f $passthrough_src ]] || die "$passthrough_src is missing (libfuse3-dev)"
helper=$repo/bench/peers_helper.py
watch_py=$repo/tests/integration/cachewatch.py

mkdir -p "$work"
work=$(realpath "$work")
venv=$(realpath "$venv")

# Mounts a previous run left behind under our own directory, then
# everything of it but the venv.
leftover_mounts() { findmnt -rn -o TARGET | awk -v w="$work/" 'index($0, w) == 1' | sort -r; }
clean_work() {
        local mp
        while read -r mp; do
                [[ -n $mp ]] || continue
                umount "$mp" 2>/dev/null || umount -l "$mp" || true
        done < <(leftover_mounts)
        find "$work" -mindepth 1 -maxdepth 1 ! -path "$venv" -exec rm -rf {} +
}
clean_work
mkdir -p "$work/www/raw/data" "$work/www/raw/st" "$work/big" "$work/bin" "$work/logs"

export T=$work # nginx.sh puts its instance directories under $T
# shellcheck source=../tests/integration/nginx.sh
source "$repo/tests/integration/nginx.sh"

# ------------------------------------------------------------------ cleanup

mounts=()   # mountpoints we made
daemons=()  # pids of foreground FUSE daemons we started (rclone, casync, passthrough_ll)
cleanup() {
        local mp pid
        for mp in "${mounts[@]}"; do
                mountpoint -q "$mp" 2>/dev/null || continue
                umount "$mp" 2>/dev/null || fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" || true
        done
        for pid in "${daemons[@]}"; do
                _stop_pid "$pid" "fuse daemon"
        done
        if ((!keep)); then
                clean_work
        fi
}
at_exit cleanup # runs after the servers are stopped (at_exit is last in, first out)

# ------------------------------------------------------------------ helpers

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# cold [PATH...]: the page cache dropped, then PATHs (the files a server is
# about to send) read back into it.
cold() {
        drop_caches
        (($#)) || return 0
        find "$@" -type f -exec cat {} + >/dev/null
}
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }
fmt() { python3 -c 'import sys; print("%.*f" % (int(sys.argv[2]), float(sys.argv[1])))' "$1" "${2:-2}"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
jget() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
tbox() { timeout -k 10 "$@"; }

wait_mounted() { # MOUNTPOINT PID NAME
        local i
        for ((i = 0; i < 600; i++)); do
                mountpoint -q "$1" && return 0
                [[ -z "$2" ]] || kill -0 "$2" 2>/dev/null || break
                sleep 0.1
        done
        die "$3 did not mount $1"
}
unmount() { # MOUNTPOINT [PID]: unmounts and waits for a foreground daemon to end
        local i
        umount "$1" 2>/dev/null || fusermount3 -u "$1" 2>/dev/null || umount -l "$1"
        [[ -n "${2:-}" ]] || return 0
        for ((i = 0; i < 300; i++)); do # casync takes a few seconds to notice
                kill -0 "$2" 2>/dev/null || break
                sleep 0.1
        done
        _stop_pid "$2" "daemon of $1"
}

# seq_read FILE: `dd bs=1M` of FILE to /dev/null, stopped (SIGINT: dd still
# prints what it did) after --seq-timeout.  Sets SEQ_GBS (GB/s of what was
# read), SEQ_BYTES, SEQ_SECS.
seq_read() {
        local out
        out=$(LC_ALL=C tbox -s INT "$seq_timeout" dd if="$1" of=/dev/null bs=1M 2>&1 >/dev/null |
                awk '{ for (i = 1; i < NF; i++) if ($i == "copied,") print $1, $(i + 1) }' | tail -n 1) || true
        [[ -n $out ]] || die "dd of $1 printed no figures"
        SEQ_BYTES=${out% *}
        SEQ_SECS=${out#* }
        ((SEQ_BYTES > 0)) || die "dd read nothing of $1"
        SEQ_GBS=$(calc "$SEQ_BYTES / 1e9 / $SEQ_SECS")
}

results=()
# row FIGURE VALUE [TARGET VERDICT]
row() {
        results+=("$1|$2|${3:-}|${4:-}")
        if [[ -n ${3:-} ]]; then
                printf '%-60s %14s   %-12s %s\n' "$1" "$2" "$3" "$4"
        else
                printf '%-60s %14s\n' "$1" "$2"
        fi
}
# check VALUE OP LIMIT: "pass" or "FAIL"
check() { python3 -c 'import sys, operator as o
v, op, lim = float(sys.argv[1]), sys.argv[2], float(sys.argv[3])
print("pass" if {"<=": o.le, ">=": o.ge}[op](v, lim) else "FAIL")' "$@"; }
# target_row FIGURE VALUE OP LIMIT SUFFIX [DECIMALS]
target_row() { row "$1" "$(fmt "$2" "${6:-2}")$5" "$3 $4$5" "$(check "$2" "$3" "$4")"; }

# The cairnfs serving MOUNTPOINT (cairn mount starts it in the background).
cairnfs_pid() {
        local p exe
        for p in /proc/[0-9]*; do
                exe=$(readlink "$p/exe" 2>/dev/null) || continue
                [[ "${exe##*/}" == cairnfs ]] || continue
                if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$1"; then
                        echo "${p#/proc/}"
                        return 0
                fi
        done
}
peak_all_kib=0
# cairn_mount STORE REF MOUNTPOINT CACHE [cairn mount options...]; sets CAIRN_PID
cairn_mount() {
        local store=$1 ref=$2 mp=$3 cache=$4
        shift 4
        mkdir -p "$mp"
        tbox 60 "$cairn" mount --store "$store" "$ref" "$mp" --cache-dir "$cache" "$@" \
                >>"$work/logs/cairn-mount.log" 2>&1 || {
                tail -n 20 "$work/logs/cairn-mount.log" >&2
                die "cairn mount $ref at $mp failed"
        }
        mounts+=("$mp")
        CAIRN_PID=$(cairnfs_pid "$mp")
        [[ -n $CAIRN_PID ]] || die "no cairnfs process serves $mp"
}
# cairn_umount MOUNTPOINT: sets CAIRN_HWM_KIB, the daemon's peak resident memory.
cairn_umount() {
        local pid
        pid=$(cairnfs_pid "$1")
        CAIRN_HWM_KIB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
        ((CAIRN_HWM_KIB > peak_all_kib)) && peak_all_kib=$CAIRN_HWM_KIB
        tbox 60 "$cairn" umount "$1" >>"$work/logs/cairn-mount.log" 2>&1 || unmount "$1"
        local i
        for ((i = 0; i < 300; i++)); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.1
        done
        die "cairnfs (pid $pid) still runs 30 s after $1 was unmounted"
}
# The store traffic: log_mark is where nginx's access log is now;
# traffic_since MARK prints the requests for blobs since then and the MiB
# they sent ("STATUS BYTES METHOD URI ..." a line).
log_mark() { wc -l <"$NGINX_DIR/access.log"; }
traffic_since() {
        tail -n +"$(($1 + 1))" "$NGINX_DIR/access.log" |
                awk '$4 ~ "^/store/blobs/" { n++; b += $2 } END { printf "%d %.1f\n", n, b / 1048576 }'
}

s3fs_mount() { # MOUNTPOINT
        mkdir -p "$1"
        s3fs "$bucket" "$1" -o "url=$endpoint" -o use_path_request_style -o endpoint=us-east-1 \
                -o "passwd_file=$work/s3fs.passwd" -o ro -o "logfile=$work/logs/s3fs.log"
        mounts+=("$1")
        wait_mounted "$1" "" s3fs
}
# daemon_mount MOUNTPOINT NAME LOG CMD...: runs CMD in the background, its
# output appended to LOG, until MOUNTPOINT is mounted; sets DAEMON_PID.
daemon_mount() {
        local mp=$1 name=$2 logf=$3
        shift 3
        mkdir -p "$mp"
        "$@" >>"$logf" 2>&1 &
        DAEMON_PID=$!
        daemons+=("$DAEMON_PID")
        mounts+=("$mp")
        wait_mounted "$mp" "$DAEMON_PID" "$name"
}
rclone_mount() { # MOUNTPOINT CACHE_DIR; sets DAEMON_PID
        daemon_mount "$1" "rclone mount" "$work/logs/rclone.log" rclone mount "bench:$bucket" "$1" \
                --read-only --vfs-cache-mode full --cache-dir "$2" --log-file "$work/logs/rclone.log"
}
casync_mount() { # MOUNTPOINT; sets DAEMON_PID
        daemon_mount "$1" "casync mount" "$work/logs/casync.log" casync mount \
                --store="$NGINX_URL/casync/default.castr" "$NGINX_URL/casync/data.caidx" "$1"
}
passthrough_mount() { # MOUNTPOINT; sets DAEMON_PID
        daemon_mount "$1" passthrough_ll "$work/logs/passthrough_ll.log" \
                "$work/bin/passthrough_ll" -f -o "ro,source=$work/www/raw/data" "$1"
}

# ------------------------------------------------------------------ data

t_start=$(now)
echo "== data and servers (work directory $work)"
raw=$work/www/raw
# AES-CTR of zeros: incompressible, and ten times faster than /dev/urandom.
randfile() { # PATH BYTES KEY
        # openssl ends on SIGPIPE when head has had enough: the size says if it worked.
        { openssl enc -aes-128-ctr -K "$3" -iv 0 -in /dev/zero 2>/dev/null || true; } |
                head -c "$2" >"$1"
        [[ $(stat -c %s "$1") == "$2" ]] || die "could not write $2 random bytes to $1"
}
randfile "$raw/data/data.bin" $((1 << 30)) 0123456789abcdef0123456789abcdef
randfile "$work/big/big.bin" $((4 << 30)) fedcba9876543210fedcba9876543210
tbox 300 "$py" "$helper" gen-safetensors "$raw/st/model.safetensors" --tensors 24 --mib 32 >/dev/null
st_bytes=$(stat -c %s "$raw/st/model.safetensors")
data_bytes=$((1 << 30))
echo "data.bin $data_bytes bytes, model.safetensors $st_bytes bytes, big.bin $((4 << 30)) bytes"

store=$work/www/store
ref_data=bench/peers-data:v1
ref_st=bench/peers-st:v1
ref_big=bench/peers-big:v1
# build_volume DIR REF ARRAY: builds DIR as REF and sets ARRAY to the blobs
# the build added to the store (its pack(s) and manifest: what a cold
# mount of REF fetches, and all that the server side must have in memory).
build_volume() {
        local -n added=$3
        local before
        before=$(if [[ -d $store/blobs ]]; then find "$store/blobs" -type f | sort; fi)
        tbox 600 "$cairn" build "$1" --store "$store" --tag "$2" --quiet >/dev/null ||
                die "cairn build of $1 failed"
        mapfile -t added < <(comm -13 <(echo "$before") <(find "$store/blobs" -type f | sort))
        ((${#added[@]})) || die "the build of $2 added no blob to $store"
}
# shellcheck disable=SC2034 # packs_st: built and checked, never pre-read (see above)
packs_data=() packs_st=() packs_big=()
build_volume "$raw/data" "$ref_data" packs_data
build_volume "$raw/st" "$ref_st" packs_st
build_volume "$work/big" "$ref_big" packs_big
rm -f "$work/big/big.bin" # only the volume is read from now on

casync_store=$work/www/casync
mkdir -p "$casync_store"
tbox 300 casync make --store="$casync_store/default.castr" "$casync_store/data.caidx" "$raw/data" \
        >/dev/null || die "casync make failed"

echo "-- compiling the libfuse passthrough_ll example"
examples=$(dirname "$passthrough_src")
# shellcheck disable=SC2046
gcc -O2 -Wall -I"$examples" $(pkg-config --cflags fuse3) "$passthrough_src" \
        -o "$work/bin/passthrough_ll" $(pkg-config --libs fuse3) -lpthread ||
        die "cannot compile $passthrough_src"

nginx_start "$work/www" # with an access log: the warm reads must not fetch
url=$NGINX_URL/store

bucket="cairn-bench"
access_key=bench$(python3 -c 'import secrets; print(secrets.token_hex(6))')
secret_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')
versitygw_start "$versitygw" "$work/gw/data" "$work/logs/versitygw.log" "$access_key" "$secret_key" ||
        die "versitygw does not start"
endpoint=http://127.0.0.1:$GW_PORT
# s3fs reads its credentials from a file, rclone from its environment.
printf '%s:%s\n' "$access_key" "$secret_key" >"$work/s3fs.passwd"
chmod 600 "$work/s3fs.passwd"
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other
export RCLONE_CONFIG_BENCH_ENDPOINT=$endpoint RCLONE_CONFIG_BENCH_REGION=us-east-1
export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$access_key
export RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$secret_key
export RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
export RCLONE_CONFIG=$work/rclone.conf # never the user's; the remote is in the environment
: >"$RCLONE_CONFIG"
# AWS_CA_BUNDLE (a sandbox may set one) breaks rclone's plain-http client.
unset AWS_CA_BUNDLE
tbox 60 rclone mkdir "bench:$bucket" || die "cannot create the bucket"
tbox 300 rclone copyto "$raw/data/data.bin" "bench:$bucket/data/data.bin" ||
        die "cannot upload data.bin to versitygw"
gw_object=$work/gw/data/$bucket/data/data.bin
cmp -s "$gw_object" "$raw/data/data.bin" || die "the object versitygw stored is not data.bin"
echo "versitygw on $endpoint, nginx on $NGINX_URL"
t_ready=$(now)

has_warm=0
"$cairn" warm --help >/dev/null 2>&1 && has_warm=1

# ------------------------------------------------------------------ runs

declare -A S=() # figure -> samples, one per run
declare -A PARTIAL=()
sample() { S[$1]+=" $2"; }
# seq_sample NAME FILE: a time-boxed sequential read, sampled as NAME
seq_sample() {
        seq_read "$2"
        sample "$1" "$SEQ_GBS"
        ((SEQ_BYTES >= data_bytes)) || PARTIAL[$1]=$SEQ_BYTES
}
st_digest=
st_load() { # NAME PATH
        local out
        out=$(tbox 600 "$py" "$helper" st-load "$2") || die "safetensors load of $2 failed"
        sample "$1" "$(jget "$out" secs)"
        local d
        d=$(jget "$out" digest)
        if [[ -z $st_digest ]]; then
                st_digest=$d
        elif [[ $d != "$st_digest" ]]; then
                die "$1: the tensors loaded from $2 differ from the first load's"
        fi
}

mp=$work/mnt
for ((r = 1; r <= runs; r++)); do
        echo "== run $r of $runs"
        # ---- cold sequential
        cold "$raw/data/data.bin"
        out=$(tbox "$seq_timeout" curl -sS -o /dev/null -w '%{size_download} %{time_total}' \
                "$NGINX_URL/raw/data/data.bin") || die "curl of data.bin failed"
        [[ ${out% *} == "$data_bytes" ]] || die "curl downloaded ${out% *} bytes of $data_bytes"
        sample curl "$(calc "${out% *} / 1e9 / ${out#* }")"

        rm -rf "$work/cache-cold"
        cold "${packs_data[@]}"
        cairn_mount "$url" "$ref_data" "$mp/cairn" "$work/cache-cold"
        mark=$(log_mark)
        seq_sample cairn_cold "$mp/cairn/data.bin"
        cold_traffic=$(traffic_since "$mark")
        cairn_umount "$mp/cairn"

        cold "$gw_object"
        s3fs_mount "$mp/s3fs"
        seq_sample s3fs "$mp/s3fs/data/data.bin"
        unmount "$mp/s3fs"

        rm -rf "$work/cache-rclone"
        cold "$gw_object"
        rclone_mount "$mp/rclone" "$work/cache-rclone"
        seq_sample rclone "$mp/rclone/data/data.bin"
        unmount "$mp/rclone" "$DAEMON_PID"
        rm -rf "$work/cache-rclone"

        cold "$casync_store"
        casync_mount "$mp/casync"
        seq_sample casync "$mp/casync/data.bin"
        unmount "$mp/casync" "$DAEMON_PID"

        cold
        seq_sample local_cold "$raw/data/data.bin"

        # ---- warm (chunk cache of the cold read above on disk) and hot
        cold
        cairn_mount "$url" "$ref_data" "$mp/cairn" "$work/cache-cold"
        mark=$(log_mark)
        seq_sample cairn_warm "$mp/cairn/data.bin"
        out=$(traffic_since "$mark")
        sample warm_fetches "${out% *}"
        seq_sample cairn_hot "$mp/cairn/data.bin"
        if ((r == 1)); then
                cmp "$mp/cairn/data.bin" "$raw/data/data.bin" ||
                        die "data.bin read through the cairn mount differs from the source"
        fi
        cairn_umount "$mp/cairn"

        cold
        passthrough_mount "$mp/passthrough"
        seq_sample passthrough "$mp/passthrough/data.bin"
        unmount "$mp/passthrough" "$DAEMON_PID"

        cold
        seq_read "$raw/data/data.bin" # into the page cache
        seq_sample local_hot "$raw/data/data.bin"

        # ---- cairn warm
        if ((has_warm)); then
                rm -rf "$work/cache-warm"
                cold "${packs_data[@]}"
                mark=$(log_mark)
                t0=$(now)
                tbox 600 "$cairn" warm --store "$url" "$ref_data" --cache-dir "$work/cache-warm" \
                        --parallel 8 >>"$work/logs/cairn-warm.log" 2>&1 || die "cairn warm failed"
                t1=$(now)
                warm_traffic=$(traffic_since "$mark")
                sample cairn_warm_cmd "$(calc "$data_bytes / 1e9 / ($t1 - $t0)")"
                if ((r == 1)); then
                        # What it warmed serves a whole read without the store.
                        cold
                        cairn_mount "$url" "$ref_data" "$mp/cairn" "$work/cache-warm"
                        mark=$(log_mark)
                        seq_read "$mp/cairn/data.bin"
                        out=$(traffic_since "$mark")
                        after_warm_fetches=${out% *}
                        cairn_umount "$mp/cairn"
                fi
                rm -rf "$work/cache-warm"
        fi

        # ---- safetensors
        rm -rf "$work/cache-st"
        cold
        cairn_mount "$url" "$ref_st" "$mp/cairn" "$work/cache-st"
        st_load st_cairn_cold "$mp/cairn/model.safetensors"
        cairn_umount "$mp/cairn"
        cold
        cairn_mount "$url" "$ref_st" "$mp/cairn" "$work/cache-st"
        st_load st_cairn_warm "$mp/cairn/model.safetensors"
        st_load st_cairn_hot "$mp/cairn/model.safetensors"
        cairn_umount "$mp/cairn"
        rm -rf "$work/cache-st"
        cold
        st_load st_local_cold "$raw/st/model.safetensors"
        st_load st_local_hot "$raw/st/model.safetensors"
        last() { local v=${S[$1]:-}; fmt "${v##* }" 3; }
        echo "  GB/s: curl $(last curl), cairn cold $(last cairn_cold), s3fs $(last s3fs)," \
                "rclone $(last rclone), casync $(last casync), local disk $(last local_cold)"
        echo "  GB/s: cairn warm $(last cairn_warm), passthrough_ll $(last passthrough)," \
                "cairn hot $(last cairn_hot), dd hot $(last local_hot)," \
                "cairn warm command ${S[cairn_warm_cmd]:+$(last cairn_warm_cmd)}"
        echo "  safetensors s: cairn cold $(last st_cairn_cold), warm $(last st_cairn_warm)," \
                "hot $(last st_cairn_hot); local cold $(last st_local_cold), hot $(last st_local_hot)"
done
rm -rf "$work/cache-cold"

# ------------------------------------------------------------------ once

echo "== time to first byte: 100 random 4 KiB reads of a cold data.bin"
declare -A TT=()
ttfb() { # NAME TARGET
        local out
        out=$(tbox 150 "$py" "$helper" ttfb "$2" --count 100 --seed 4 --timeout 120) ||
                die "ttfb of $2 failed"
        TT[$1]=$out
        echo "  $1: $out"
}
cold "$raw/data/data.bin"
ttfb http "$NGINX_URL/raw/data/data.bin"
cold
ttfb local "$raw/data/data.bin"
rm -rf "$work/cache-ttfb"
cold "${packs_data[@]}"
cairn_mount "$url" "$ref_data" "$mp/cairn" "$work/cache-ttfb"
mark=$(log_mark)
ttfb cairn "$mp/cairn/data.bin"
ttfb_traffic=$(traffic_since "$mark")
cairn_umount "$mp/cairn"
rm -rf "$work/cache-ttfb"
cold "$gw_object"
s3fs_mount "$mp/s3fs"
ttfb s3fs "$mp/s3fs/data/data.bin"
unmount "$mp/s3fs"
rm -rf "$work/cache-rclone"
cold "$gw_object"
rclone_mount "$mp/rclone" "$work/cache-rclone"
ttfb rclone "$mp/rclone/data/data.bin"
unmount "$mp/rclone" "$DAEMON_PID"
rm -rf "$work/cache-rclone"
cold "$casync_store"
casync_mount "$mp/casync"
ttfb casync "$mp/casync/data.bin"
unmount "$mp/casync" "$DAEMON_PID"

echo "== cairnfs memory: 4 GiB sequential read"
declare -A MEM=() MEMGBS=()
for limit in default 128M; do
        opts=()
        [[ $limit == default ]] || opts=(--memory-limit "$limit")
        rm -rf "$work/cache-big"
        cold "${packs_big[@]}"
        cairn_mount "$url" "$ref_big" "$mp/cairn" "$work/cache-big" "${opts[@]}"
        seq_read "$mp/cairn/big.bin"
        ((SEQ_BYTES == 4 << 30)) || PARTIAL[big_$limit]=$SEQ_BYTES
        MEMGBS[$limit]=$SEQ_GBS
        cairn_umount "$mp/cairn"
        MEM[$limit]=$CAIRN_HWM_KIB
        echo "  $limit: VmHWM ${MEM[$limit]} KiB, $(fmt "$SEQ_GBS") GB/s"
        rm -rf "$work/cache-big"
done

echo "== --cache-size 256M: 1 GiB read, cache directory watched"
cache_lim=$work/cache-limit
mkdir -p "$cache_lim"
statvfs=()
# On its own tmpfs, statvfs() gives the exact bytes in use at every sample.
if mount -t tmpfs -o size=1G,mode=0755 cairn-bench-cache "$cache_lim" 2>/dev/null; then
        mounts+=("$cache_lim")
        statvfs=(--statvfs)
fi
base_used=$(python3 -c 'import os, sys; s = os.statvfs(sys.argv[1]); print((s.f_blocks - s.f_bfree) * s.f_frsize)' "$cache_lim")
rm -f "$work/watch.stop" "$work/watch.ready"
python3 "$watch_py" watch "$cache_lim" "$work/watch.stop" "$work/watch.json" "${statvfs[@]}" \
        --ready "$work/watch.ready" --interval 0.005 --timeout 600 &
watch_pid=$!
for ((i = 0; i < 200; i++)); do [[ -e $work/watch.ready ]] && break; sleep 0.05; done
cold "${packs_data[@]}"
cairn_mount "$url" "$ref_data" "$mp/cairn" "$cache_lim" --cache-size 256M
seq_read "$mp/cairn/data.bin"
limit_gbs=$SEQ_GBS
((SEQ_BYTES == data_bytes)) || die "the read with --cache-size 256M stopped at $SEQ_BYTES bytes"
cairn_umount "$mp/cairn"
touch "$work/watch.stop"
wait "$watch_pid" || die "the cache watcher failed"
watch=$(cat "$work/watch.json")
if ((${#statvfs[@]})); then
        cache_max=$(($(jget "$watch" max_fs_used) - base_used))
        cache_how="tmpfs statvfs, $(jget "$watch" samples) samples"
else
        cache_max=$(jget "$watch" max_walk_certified)
        cache_how="walk of the cache, $(jget "$watch" samples) samples"
fi
if ((${#statvfs[@]})); then
        umount "$cache_lim"
fi
t_end=$(now)

# ------------------------------------------------------------------ table

# shellcheck disable=SC2086 # the samples are words
med() { median ${S[$1]}; }
# shellcheck disable=SC2086
total() { printf '%s\n' ${S[$1]} | awk '{ s += $1 } END { print s + 0 }'; }
mark() { [[ -z ${PARTIAL[$1]:-} ]] || echo " (time-boxed: $((PARTIAL[$1] >> 20)) MiB)"; }
gbs() { echo "$(fmt "$(med "$1")" 3)$(mark "$1")"; }
echo
echo "== results (median of $runs runs; GB/s = 10^9 bytes/s)"
row "curl from nginx, data.bin (GB/s)" "$(gbs curl)"
row "dd of data.bin from local disk, page cache dropped (GB/s)" "$(gbs local_cold)"
row "cold: cairn mount from nginx (GB/s)" "$(gbs cairn_cold)"
row "cold: s3fs $(s3fs --version | head -n 1 | grep -o 'V[0-9.]*'), versitygw (GB/s)" "$(gbs s3fs)"
row "cold: rclone $(rclone version | head -n 1 | awk '{ print $2 }') mount --vfs-cache-mode full (GB/s)" "$(gbs rclone)"
row "cold: casync $(casync --version | awk '{ print $2 }') mount, http store on nginx (GB/s)" "$(gbs casync)"
target_row "ratio: cairn cold / curl" "$(calc "$(med cairn_cold) / $(med curl)")" ">=" 0.8 x
row "cold: cairn requests / MiB fetched from nginx (last run)" "${cold_traffic% *} / ${cold_traffic#* }"
for peer in s3fs rclone casync; do
        row "ratio: cairn cold / $peer (no target: other servers)" "$(fmt "$(calc "$(med cairn_cold) / $(med $peer)")")x"
done
for name in http local cairn s3fs rclone casync; do
        label=$name
        case $name in
        http) label="HTTP range GET on nginx (keep-alive)" ;;
        local) label="local disk, page cache dropped" ;;
        esac
        out=${TT[$name]}
        n=$(jget "$out" reads)
        ((n == 100)) || label="$label, $n reads in 120 s"
        if [[ $name == cairn ]]; then
                target_row "ttfb p50, cairn (ms)" "$(jget "$out" p50_ms)" "<=" 10 ""
                target_row "ttfb p99, cairn (ms)" "$(jget "$out" p99_ms)" "<=" 30 ""
                row "ttfb: cairn requests / MiB fetched for the 100 reads" \
                        "${ttfb_traffic% *} / ${ttfb_traffic#* }"
        else
                row "ttfb p50 / p99, $label (ms)" \
                        "$(fmt "$(jget "$out" p50_ms)") / $(fmt "$(jget "$out" p99_ms)")"
        fi
done
row "warm: cairn, chunk cache on disk, page cache dropped (GB/s)" "$(gbs cairn_warm)"
row "warm: store requests during the warm reads" "$(total warm_fetches)"
row "warm: passthrough_ll, same bytes on the same disk (GB/s)" "$(gbs passthrough)"
target_row "ratio: cairn warm / passthrough_ll" "$(calc "$(med cairn_warm) / $(med passthrough)")" ">=" 1.5 x
row "hot: cairn, second read from the page cache (GB/s)" "$(gbs cairn_hot)"
row "hot: dd of data.bin from the page cache (GB/s)" "$(gbs local_hot)"
target_row "ratio: cairn hot / dd hot" "$(calc "$(med cairn_hot) / $(med local_hot)")" ">=" 0.5 x
if ((has_warm)); then
        row "cairn warm --parallel 8, 1 GiB volume, empty cache (GB/s)" "$(gbs cairn_warm_cmd)"
        target_row "ratio: cairn warm / curl" "$(calc "$(med cairn_warm_cmd) / $(med curl)")" ">=" 0.9 x
        row "cairn warm: requests / MiB fetched (last run)" "${warm_traffic% *} / ${warm_traffic#* }"
        row "store requests of a full read after cairn warm" "$after_warm_fetches"
else
        row "cairn warm" "n/a (this build has no 'cairn warm')"
fi
st_mib=$((st_bytes >> 20))
row "safetensors load ($st_mib MiB, 24 tensors), local disk cold (s)" "$(fmt "$(med st_local_cold)")"
row "safetensors load, local page cache (s)" "$(fmt "$(med st_local_hot)")"
row "safetensors load, cairn from nginx cold (s)" "$(fmt "$(med st_cairn_cold)")"
row "safetensors load, cairn warm: chunk cache, page cache dropped (s)" "$(fmt "$(med st_cairn_warm)")"
row "safetensors load, cairn page cache (s)" "$(fmt "$(med st_cairn_hot)")"
target_row "ratio: safetensors cairn cold / local cold" \
        "$(calc "$(med st_cairn_cold) / $(med st_local_cold)")" "<=" 2 x
target_row "ratio: safetensors cairn warm / local cold (page cache dropped)" \
        "$(calc "$(med st_cairn_warm) / $(med st_local_cold)")" "<=" 1.2 x
row "ratio: safetensors cairn page cache / local page cache" \
        "$(fmt "$(calc "$(med st_cairn_hot) / $(med st_local_hot)")")x"
row "cairnfs peak RSS over every mount above (MiB)" "$(fmt "$(calc "$peak_all_kib / 1024")" 1)"
target_row "cairnfs peak RSS, 4 GiB read, default settings (MiB)" \
        "$(calc "${MEM[default]} / 1024")" "<=" 256 ""
target_row "cairnfs peak RSS, 4 GiB read, --memory-limit 128M (MiB)" \
        "$(calc "${MEM[128M]} / 1024")" "<=" 128 ""
row "4 GiB cold read from nginx, default / 128M (GB/s)" \
        "$(fmt "${MEMGBS[default]}" 3) / $(fmt "${MEMGBS[128M]}" 3)"
target_row "--cache-size 256M: most the cache directory held, 1 GiB read (MiB)" \
        "$(calc "$cache_max / 1048576")" "<=" 256 "" 3
row "--cache-size 256M: most chunks/ held, two walks agreeing (MiB)" \
        "$(fmt "$(calc "$(jget "$watch" max_walk_certified) / 1048576")" 3)"
row "--cache-size 256M: that read (GB/s; $cache_how)" "$(fmt "$limit_gbs" 3)"
row "time: data and servers / measurements (s)" \
        "$(fmt "$(calc "$t_ready - $t_start")" 0) / $(fmt "$(calc "$t_end - $t_ready")" 0)"

if ((write)); then
        section=$(
                echo "<!-- peers:begin -->"
                echo "## Side by side with peers: cold, warm and hot reads, \`cairn warm\`, safetensors, memory"
                echo
                echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
                echo "$(uname -r), by \`bench/peers.sh --write\` (median of $runs interleaved runs),"
                echo "$("$cairn" --version | head -n 1)."
                echo "Data: one 1 GiB incompressible file and a $st_mib MiB safetensors file"
                echo "(24 float16 matrices of normal values), each a volume in a directory store"
                echo "that nginx $(nginx -v 2>&1 | grep -o '[0-9.]*$') serves on loopback; the same file in versitygw"
                echo "(S3) for s3fs and rclone, and in a casync store on the same nginx."
                echo "Cold means a fresh mount and client cache, the page cache dropped, then the"
                echo "server's file read back into it (the servers answer from memory); for the"
                echo "safetensors loads nothing is read back, both sides read the disk. Warm:"
                echo "cairn's chunk cache on disk, the page cache dropped. Hot: the page cache."
                echo "Sequential reads are \`dd bs=1M\` time-boxed at ${seq_timeout} s; time to first"
                echo "byte is 100 preads of 4 KiB at the same random offsets for every reader."
                echo "python $("$py" -c 'import platform; print(platform.python_version())'), safetensors $("$py" -c 'import safetensors; print(safetensors.__version__)'), numpy $("$py" -c 'import numpy; print(numpy.__version__)')."
                ((has_warm)) || echo "This build had no \`cairn warm\`: its rows are missing."
                echo
                echo "| figure | value | target | result |"
                echo "|---|---|---|---|"
                for r in "${results[@]}"; do
                        IFS='|' read -r f v t p <<<"$r"
                        echo "| $f | $v | $t | $p |"
                done
                echo "<!-- peers:end -->"
        )
        doc=$repo/docs/BENCHMARKS.md
        [[ -f $doc ]] || printf '# Benchmarks\n\nEvery figure here comes from a script in `bench/`; rerun it to check.\n\n' >"$doc"
        python3 - "$doc" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- peers:begin -->.*?<!-- peers:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
        echo "wrote $doc"
fi
