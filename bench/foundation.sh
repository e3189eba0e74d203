#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Foundation benchmarks, each measured side by side in one run:
#   1. build throughput: `cairn build` vs `casync make` on the same 1 GiB of
#      random data (source in the page cache for both, fresh stores on the
#      same disk);
#   2. dedup: new pack bytes after inserting 1 MiB at the start of a 200 MiB
#      random file and rebuilding into the same tag, and after an unchanged
#      rebuild;
#   3. scale: a 1,000,000-file volume (100 x 100 directories of 100 files):
#      mount time and cairnfs resident memory right after mount, and
#      `find MOUNT -type f | wc -l` over 100,000 files with a warm kernel cache.
#
# Usage: bench/foundation.sh [--build-dir DIR] [--work DIR] [--write]
#   --write  also replace the foundation section of docs/BENCHMARKS.md
# Needs root (drops the page cache) and casync (scripts/deps.sh installs it).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$repo/build
work=${TMPDIR:-/var/tmp}/cairn-bench-foundation
write=0
while (($#)); do
        case $1 in
        --build-dir) build_dir=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --write) write=1; shift ;;
        *) echo "usage: $0 [--build-dir DIR] [--work DIR] [--write]" >&2; exit 2 ;;
        esac
done
cairn=$build_dir/bin/cairn
[[ -x $cairn ]] || { echo "bench: '$cairn' not built (run cmake first)" >&2; exit 1; }
command -v casync >/dev/null || { echo "bench: casync is not installed" >&2; exit 1; }

mnt=$work/mnt
cleanup() {
        mountpoint -q "$mnt" 2>/dev/null && "$cairn" umount "$mnt" || true
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work" "$mnt"

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
fmt() { printf '%.2f' "$1"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

results=()
add() { results+=("$1|$2"); printf '%-58s %s\n' "$1" "$2"; }

echo "== build: 1 GiB of random data"
mkdir -p "$work/src1g"
head -c $((1 << 30)) /dev/urandom >"$work/src1g/random.bin"
cat "$work/src1g/random.bin" >/dev/null # both tools read it from the page cache
sync
t0=$(now)
"$cairn" build "$work/src1g" --store "$work/store-build" --tag bench/build:v1 --quiet >/dev/null
t1=$(now)
sync
t2=$(now)
casync make --store="$work/casync-store" "$work/casync.caidx" "$work/src1g" >/dev/null
t3=$(now)
sync
t4=$(now)
cairn_s=$(elapsed "$t0" "$t1")
casync_s=$(elapsed "$t2" "$t3")
casync_sync_s=$(elapsed "$t2" "$t4")
add "cairn build, 1 GiB random (s, includes its fsync)" "$(fmt "$cairn_s")"
add "cairn build throughput (MiB/s)" "$(fmt "$(echo "1024 / $cairn_s" | bc -l)")"
add "casync make, same data (s)" "$(fmt "$casync_s")"
add "casync make + sync, same data (s)" "$(fmt "$casync_sync_s")"
add "ratio: cairn build / casync make throughput" "$(fmt "$(echo "$casync_s / $cairn_s" | bc -l)")x"
rm -rf "$work/src1g" "$work/store-build" "$work/casync-store" "$work/casync.caidx"

echo "== dedup: 1 MiB inserted at the start of a 200 MiB random file"
mkdir -p "$work/dedup"
head -c $((200 << 20)) /dev/urandom >"$work/orig.bin"
cp "$work/orig.bin" "$work/dedup/model.bin"
store=$work/store-dedup
pack_bytes() { find "$store/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
"$cairn" build "$work/dedup" --store "$store" --tag bench/dedup:v1 --quiet >/dev/null
before=$(pack_bytes)
d1=$("$cairn" build "$work/dedup" --store "$store" --tag bench/dedup:v1 --quiet | tail -1)
unchanged=$(($(pack_bytes) - before))
{ head -c $((1 << 20)) /dev/urandom; cat "$work/orig.bin"; } >"$work/dedup/model.bin"
before=$(pack_bytes)
"$cairn" build "$work/dedup" --store "$store" --tag bench/dedup:v1 --quiet >/dev/null
inserted=$(($(pack_bytes) - before))
add "unchanged rebuild: new blob bytes (incl. manifest)" "$unchanged"
add "1 MiB insert: new blob bytes" "$inserted"
add "1 MiB insert: new bytes / file size" "$(fmt "$(echo "100 * $inserted / (201 * 1048576)" | bc -l)")%"
rm -rf "$work/dedup" "$work/orig.bin" "$store"

echo "== scale: 1,000,000 files"
python3 - "$work/scale" <<'PY'
import os, sys
root = sys.argv[1]
for a in range(100):
    for b in range(100):
        d = f"{root}/d{a:03d}/e{b:03d}"
        os.makedirs(d, exist_ok=True)
        for c in range(100):
            with open(f"{d}/f{c:03d}.txt", "w") as f:
                f.write(f"{a} {b} {c}\n")
PY
t0=$(now)
"$cairn" build "$work/scale" --store "$work/store-scale" --tag bench/scale:v1 --quiet >/dev/null
t1=$(now)
add "build of 1,000,000 files (s)" "$(fmt "$(elapsed "$t0" "$t1")")"
manifest=$(find "$work/store-scale/blobs" -type f -printf '%s\n' | sort -n | tail -1)
add "manifest size (bytes)" "$manifest"
drop_caches
t0=$(now)
"$cairn" mount --store "$work/store-scale" bench/scale:v1 "$mnt" --cache-dir "$work/cache"
t1=$(now)
pid=$(pgrep -n -f "cairnfs .*bench/scale:v1")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
add "mount, cold page cache (s)" "$(fmt "$(elapsed "$t0" "$t1")")"
add "cairnfs resident memory after mount (MiB)" "$(fmt "$(echo "$rss / 1024" | bc -l)")"
"$cairn" umount "$mnt"
t0=$(now)
"$cairn" mount --store "$work/store-scale" bench/scale:v1 "$mnt" --cache-dir "$work/cache"
t1=$(now)
add "mount, warm page cache (s)" "$(fmt "$(elapsed "$t0" "$t1")")"
dirs=("$mnt"/d00{0..9})
find "${dirs[@]}" -type f | wc -l >/dev/null # warm the kernel's dentry/inode cache
t0=$(now)
count=$(find "${dirs[@]}" -type f | wc -l)
t1=$(now)
add "find -type f over $count files, warm kernel cache (s)" "$(fmt "$(elapsed "$t0" "$t1")")"
"$cairn" umount "$mnt"
rm -rf "$work/scale" "$work/store-scale" "$work/cache"

if ((write)); then
        section=$(
                echo "<!-- foundation:begin -->"
                echo "## Foundation: build, dedup, scale"
                echo
                echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
                echo "$(uname -r), by \`bench/foundation.sh --write\`."
                echo
                echo "| figure | value |"
                echo "|---|---|"
                for r in "${results[@]}"; do echo "| ${r%%|*} | ${r#*|} |"; done
                echo "<!-- foundation:end -->"
        )
        doc=$repo/docs/BENCHMARKS.md
        [[ -f $doc ]] || printf '# Benchmarks\n\nEvery figure here comes from a script in `bench/`; rerun it to check.\n\n' >"$doc"
        python3 - "$doc" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- foundation:begin -->.*?<!-- foundation:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
        echo "wrote $doc"
fi
