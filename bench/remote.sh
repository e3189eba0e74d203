#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Remote-store benchmarks: cold sequential reads of one 1 GiB incompressible
# file, each reader side by side in the same run, against the same server:
#   (a) http: `curl` downloading the pack from nginx on loopback, against
#       `dd` of the file through a cairn mount of the same nginx (target:
#       cairn at least 0.8x curl);
#   (b) S3 (versitygw on loopback, signatures checked): the cairn mount of
#       s3://, against s3fs and `rclone mount` reading the same object
#       (target: cairn at least 3x each).
# "Cold" means: a fresh cairn cache directory, a fresh mount, the page cache
# dropped.  Then the blob's file on the server side is read once into the
# page cache, the same for every reader, so that all of them are served
# from memory and the figures compare the clients, not the disk.  Each
# reader runs --runs times, interleaved; the median is reported.
#
# Usage: bench/remote.sh [--build-dir DIR] [--work DIR] [--size-mib N]
#                        [--runs N] [--no-s3] [--s3-link MB_PER_S:MS] [--write]
#   --s3-link  also (c): the S3 readers again through bench/linkproxy,
#              which gives every connection MB_PER_S (10^6 bytes/s) and
#              delays every request by MS ms, like one connection to a real
#              object store (e.g. 90:20); the loopback figures of (b)
#              measure CPU cost, not parallelism (needs Go to build it)
#   --write    also replace the remote section of docs/BENCHMARKS.md
# Needs root (drops the page cache, mounts), nginx, curl, versitygw (all
# from scripts/deps.sh) and for (b) s3fs and rclone (scripts/deps.sh --bench).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$repo/build
work=${TMPDIR:-/var/tmp}/cairn-bench-remote
size_mib=1024
runs=3
do_s3=1
s3_link=
write=0
usage() {
        echo "usage: $0 [--build-dir DIR] [--work DIR] [--size-mib N] [--runs N] [--no-s3]" \
                "[--s3-link MB_PER_S:MS] [--write]" >&2
        exit 2
}
while (($#)); do
        case $1 in
        --build-dir) build_dir=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --size-mib) size_mib=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --no-s3) do_s3=0; shift ;;
        --s3-link) s3_link=$2; shift 2 ;;
        --write) write=1; shift ;;
        *) usage ;;
        esac
done
[[ "$size_mib" =~ ^[1-9][0-9]*$ && "$runs" =~ ^[1-9][0-9]*$ ]] || usage
[[ -z $s3_link || "$s3_link" =~ ^[0-9]+(\.[0-9]+)?:[0-9]+$ ]] || usage
cairn=$build_dir/bin/cairn
die() { echo "bench: $*" >&2; exit 1; }
[[ -x $cairn ]] || die "'$cairn' not built (run cmake first)"
((EUID == 0)) || die "needs root (it drops the page cache and mounts)"
for tool in curl nginx python3; do
        command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh)"
done
if ((do_s3)); then
        for tool in s3fs rclone; do
                command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh --bench)"
        done
        versitygw=$(command -v versitygw || echo /usr/local/bin/versitygw)
        [[ -x $versitygw ]] || die "versitygw is not installed (scripts/deps.sh)"
fi

rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")
T=$work # nginx.sh puts its instance directories under $T
# shellcheck source=../tests/integration/nginx.sh
source "$repo/tests/integration/nginx.sh"

mounts=()
umount_all() {
        local mp
        for mp in "${mounts[@]}"; do
                mountpoint -q "$mp" 2>/dev/null || continue
                umount "$mp" 2>/dev/null || fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" || true
        done
}
at_exit umount_all

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# mib_s BYTES START END
mib_s() { python3 -c 'import sys; b, t0, t1 = map(float, sys.argv[1:]); print("%.1f" % (b / 1048576 / (t1 - t0)))' "$@"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$@"; }
wait_mounted() { # MOUNTPOINT PID NAME
        local i
        for ((i = 0; i < 300; i++)); do
                mountpoint -q "$1" && return 0
                [[ -z "$2" ]] || kill -0 "$2" 2>/dev/null || break
                sleep 0.1
        done
        die "$3 did not mount $1"
}
# timed_read FILE: reads it sequentially (dd bs=1M) and prints MiB/s.
timed_read() {
        local t0 t1 size
        size=$(stat -c %s "$1")
        t0=$(now)
        dd if="$1" of=/dev/null bs=1M status=none
        t1=$(now)
        mib_s "$size" "$t0" "$t1"
}

results=()
add() { results+=("$1|$2"); printf '%-62s %s\n' "$1" "$2"; }

echo "== source: $size_mib MiB of random data"
mkdir -p "$work/src" "$work/www"
head -c $((size_mib << 20)) /dev/urandom >"$work/src/model.bin"
ref=bench/remote:v1
"$cairn" build "$work/src" --store "$work/www/store" --tag "$ref" --quiet >/dev/null
# The pack: the largest blob (the other is the manifest).
pack=$(find "$work/www/store/blobs" -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
pack_hex=$(basename "$pack")
pack_size=$(stat -c %s "$pack")
echo "pack $pack_hex: $pack_size bytes"

echo "== (a) http: nginx on loopback"
nginx_start "$work/www" --no-access-log
url=$NGINX_URL/store
curl_runs=()
cairn_http_runs=()
for ((r = 1; r <= runs; r++)); do
        drop_caches
        cat "$pack" >/dev/null
        out=$(curl -s -S -o /dev/null -w '%{size_download} %{time_total}' "$url/blobs/sha256/$pack_hex")
        [[ "${out%% *}" == "$pack_size" ]] || die "curl downloaded ${out%% *} bytes, the pack has $pack_size"
        curl_runs+=("$(mib_s "${out%% *}" 0 "${out#* }")")

        mp=$work/mnt-http
        mkdir -p "$mp"
        rm -rf "$work/cache-http"
        drop_caches
        cat "$pack" >/dev/null
        "$cairn" mount --store "$url" "$ref" "$mp" --cache-dir "$work/cache-http"
        mounts+=("$mp")
        cairn_http_runs+=("$(timed_read "$mp/model.bin")")
        "$cairn" umount "$mp"
        echo "  run $r: curl ${curl_runs[-1]} MiB/s, cairn mount ${cairn_http_runs[-1]} MiB/s"
done
nginx_stop "$NGINX_DIR"
curl_mib=$(median "${curl_runs[@]}")
cairn_http_mib=$(median "${cairn_http_runs[@]}")
add "curl from nginx, loopback (MiB/s)" "$curl_mib"
add "cairn mount from nginx, cold sequential dd (MiB/s)" "$cairn_http_mib"
add "ratio: cairn / curl (target >= 0.8)" "$(ratio "$cairn_http_mib" "$curl_mib")x"

if ((do_s3)); then
        echo "== (b) S3: versitygw on loopback"
        bucket="cairn-bench"
        access_key=bench$(python3 -c 'import secrets; print(secrets.token_hex(6))')
        secret_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')
        versitygw_start "$versitygw" "$work/gw/data" "$work/gw/stdout" "$access_key" "$secret_key" ||
                die "versitygw does not start"
        endpoint=http://127.0.0.1:$GW_PORT
        echo "versitygw on $endpoint"
        export AWS_CONFIG_FILE=$work/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$work/no-aws-credentials
        unset AWS_PROFILE AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN
        export AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1
        export AWS_ACCESS_KEY_ID=$access_key AWS_SECRET_ACCESS_KEY=$secret_key
        curl -sS --fail-with-body -K <(printf 'user = "%s:%s"\n' "$access_key" "$secret_key") \
                --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT \
                -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
                "$endpoint/$bucket" >/dev/null || die "cannot create bucket $bucket"
        store=s3://$bucket/cairn
        t0=$(now)
        "$cairn" build "$work/src" --store "$store" --tag "$ref" --quiet >/dev/null
        t1=$(now)
        add "cairn build --store s3://, $size_mib MiB upload (MiB/s)" "$(mib_s $((size_mib << 20)) "$t0" "$t1")"
        object=$work/gw/data/$bucket/cairn/blobs/sha256/$pack_hex
        [[ -f $object ]] || die "the pack $pack_hex is not in the bucket (the s3 build made another)"
        key=cairn/blobs/sha256/$pack_hex

        # s3fs reads its credentials from a file, rclone from its environment.
        printf '%s:%s\n' "$access_key" "$secret_key" >"$work/s3fs.passwd"
        chmod 600 "$work/s3fs.passwd"
        export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other
        export RCLONE_CONFIG_BENCH_ENDPOINT=$endpoint RCLONE_CONFIG_BENCH_REGION=us-east-1
        export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$access_key
        export RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$secret_key
        export RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true

        # s3_round ENDPOINT: one cold read by each of cairn, s3fs and rclone
        # through ENDPOINT; appends to cairn_runs, s3fs_runs, rclone_runs.
        s3_round() {
                local ep=$1 mp
                mp=$work/mnt-s3
                mkdir -p "$mp"
                rm -rf "$work/cache-s3"
                drop_caches
                cat "$object" >/dev/null
                AWS_ENDPOINT_URL=$ep "$cairn" mount --store "$store" "$ref" "$mp" \
                        --cache-dir "$work/cache-s3"
                mounts+=("$mp")
                cairn_runs+=("$(timed_read "$mp/model.bin")")
                "$cairn" umount "$mp"

                mp=$work/mnt-s3fs
                mkdir -p "$mp"
                drop_caches
                cat "$object" >/dev/null
                s3fs "$bucket" "$mp" -o "url=$ep" -o use_path_request_style \
                        -o "passwd_file=$work/s3fs.passwd" -o endpoint=us-east-1 -o ro \
                        -o "logfile=$work/s3fs.log"
                mounts+=("$mp")
                wait_mounted "$mp" "" s3fs
                s3fs_runs+=("$(timed_read "$mp/$key")")
                umount "$mp"

                mp=$work/mnt-rclone
                mkdir -p "$mp"
                drop_caches
                cat "$object" >/dev/null
                # AWS_CA_BUNDLE (a sandbox may set one) breaks rclone's plain-http client.
                env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_ENDPOINT="$ep" rclone mount \
                        "bench:$bucket" "$mp" --read-only --vfs-cache-mode off \
                        --log-file "$work/rclone.log" &
                rclone_pid=$!
                mounts+=("$mp")
                wait_mounted "$mp" "$rclone_pid" "rclone mount"
                rclone_runs+=("$(timed_read "$mp/$key")")
                fusermount3 -u "$mp"
                wait "$rclone_pid" || true
        }
        s3fs_version=$(s3fs --version | head -n 1 | grep -o 'V[0-9.]*')
        rclone_version=$(rclone version | head -n 1 | awk '{ print $2 }')
        # s3_figures LABEL: the medians and ratios of the rounds just run.
        s3_figures() {
                local c s r
                c=$(median "${cairn_runs[@]}")
                s=$(median "${s3fs_runs[@]}")
                r=$(median "${rclone_runs[@]}")
                add "cairn mount from S3$1, cold sequential dd (MiB/s)" "$c"
                add "s3fs $s3fs_version$1, same object, cold (MiB/s)" "$s"
                add "rclone mount $rclone_version$1, same object, cold (MiB/s)" "$r"
                add "ratio$1: cairn / s3fs (target >= 3)" "$(ratio "$c" "$s")x"
                add "ratio$1: cairn / rclone mount (target >= 3)" "$(ratio "$c" "$r")x"
        }

        cairn_runs=() s3fs_runs=() rclone_runs=()
        for ((r = 1; r <= runs; r++)); do
                s3_round "$endpoint"
                echo "  run $r: cairn ${cairn_runs[-1]}, s3fs ${s3fs_runs[-1]}," \
                        "rclone ${rclone_runs[-1]} MiB/s"
        done
        s3_figures ""

        if [[ -n $s3_link ]]; then
                # The same server behind a proxy that paces every response body
                # and delays every first byte like one connection to a real
                # object store: parallel connections pay off there, not on loopback.
                echo "== (c) S3 over an S3-like link: ${s3_link%%:*} MB/s per connection, ${s3_link##*:} ms to first byte"
                go=$(command -v go || echo /usr/local/go/bin/go)
                [[ -x $go ]] || die "Go is missing: cannot build bench/linkproxy"
                (cd "$repo/bench/linkproxy" && GOFLAGS=-mod=mod "$go" build -o "$work/linkproxy" .) ||
                        die "cannot build bench/linkproxy"
                "$work/linkproxy" -upstream "127.0.0.1:$GW_PORT" -mb-per-s "${s3_link%%:*}" \
                        -latency-ms "${s3_link##*:}" -port-file "$work/linkproxy.port" \
                        2>"$work/linkproxy.log" &
                link_pid=$!
                at_exit kill "$link_pid"
                for ((i = 0; i < 100; i++)); do
                        [[ -s $work/linkproxy.port ]] && break
                        kill -0 "$link_pid" 2>/dev/null || break
                        sleep 0.1
                done
                [[ -s $work/linkproxy.port ]] || { cat "$work/linkproxy.log" >&2; die "linkproxy does not start"; }
                cairn_runs=() s3fs_runs=() rclone_runs=()
                for ((r = 1; r <= runs; r++)); do
                        s3_round "http://127.0.0.1:$(cat "$work/linkproxy.port")"
                        echo "  run $r: cairn ${cairn_runs[-1]}, s3fs ${s3fs_runs[-1]}," \
                                "rclone ${rclone_runs[-1]} MiB/s"
                done
                s3_figures " (${s3_link%%:*} MB/s, ${s3_link##*:} ms per connection)"
        fi
fi

if ((write)); then
        section=$(
                echo "<!-- remote:begin -->"
                echo "## Remote stores: cold sequential reads over HTTP and S3"
                echo
                echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
                echo "$(uname -r), by \`bench/remote.sh --write\`: one $size_mib MiB random file, every"
                echo "reader cold (fresh mount and cache, page cache dropped, the server's file in"
                echo "its page cache), median of $runs interleaved runs. Servers on loopback: nginx"
                echo "$(nginx -v 2>&1 | grep -o '[0-9.]*$') and versitygw (S3, signatures checked)."
                if [[ -n $s3_link ]]; then
                        echo "Rows marked with a link went through \`bench/linkproxy\`, which gives every"
                        echo "connection that many MB/s and delays every request by that many ms, like"
                        echo "one connection to a real object store (\`--s3-link\`); connections add up."
                fi
                echo
                echo "| figure | value |"
                echo "|---|---|"
                for r in "${results[@]}"; do echo "| ${r%%|*} | ${r#*|} |"; done
                echo "<!-- remote:end -->"
        )
        doc=$repo/docs/BENCHMARKS.md
        [[ -f $doc ]] || printf '# Benchmarks\n\nEvery figure here comes from a script in `bench/`; rerun it to check.\n\n' >"$doc"
        python3 - "$doc" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- remote:begin -->.*?<!-- remote:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
        echo "wrote $doc"
fi
