#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# GPU load check: a model loader reading a multi-GiB safetensors file
# straight into GPU memory (safetensors.torch.load_file(..., device="cuda"))
# from a cairn mount, cold and warm, against the same file on local disk.
#
#   cold:  page cache dropped; for cairn also an empty chunk cache, so every
#          byte comes from the store (a local directory store here: the
#          figure isolates cairn's own read path, verify and cache writes)
#   warm:  page cache dropped, cairn's chunk cache populated
#
# The GPU machine has Python with torch and safetensors but no libfuse3:
# BUNDLE (default build-gpu) holds cairn, cairnfs and every shared library
# they need, glibc's loader included, made by `bench/gpu_load.sh --bundle`
# on the build machine.  Usage:
#   bench/gpu_load.sh --bundle [BUILD_DIR]        # on the build machine
#   bench/gpu_load.sh [--size-gib N] [--out DIR]  # on the GPU machine, as root
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bundle=$repo/build-gpu
if [[ ${1:-} == --bundle ]]; then
        build=${2:-$repo/build}
        rm -rf "$bundle"
        mkdir -p "$bundle/bin" "$bundle/lib"
        cp "$build/bin/cairn" "$build/bin/cairnfs" "$bundle/bin/"
        strip "$bundle"/bin/*
        for b in "$bundle"/bin/*; do ldd "$b" | awk '/=> \//{print $3}'; done | sort -u |
                while read -r l; do cp -L "$l" "$bundle/lib/"; done
        cp -L /lib64/ld-linux-x86-64.so.2 "$bundle/lib/"
        du -sh "$bundle"
        exit 0
fi

size_gib=4
out=${OUT:-$repo/build-gpu-out}
while (($#)); do
        case $1 in
        --size-gib) size_gib=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--bundle [BUILD_DIR]] | [--size-gib N] [--out DIR]" >&2; exit 2 ;;
        esac
done
run() { "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$@"; }
work=${TMPDIR:-/var/tmp}/cairn-gpu-load
mnt=$work/mnt
cleanup() { mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"; } || true; }
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work/src" "$mnt" "$out"
drops=yes
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || drops=no; }
calc() { python3 -c "print($*)"; }
unmount() { fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"; }

echo "== generating a ${size_gib} GiB safetensors file"
python3 - "$work/src/model.safetensors" "$size_gib" <<'PY'
import sys, torch
from safetensors.torch import save_file
path, gib = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(7)
n = gib * 16  # 64 MiB bf16 tensors
tensors = {f"layers.{i}.weight": torch.randn(4096, 8192, generator=g).to(torch.bfloat16) for i in range(n)}
save_file(tensors, path)
PY
ls -l "$work/src/model.safetensors"

echo "== cairn build"
t0=$(date +%s.%N)
run "$bundle/bin/cairn" build "$work/src" --store "$work/store" --tag gpu/model:v1 --quiet >/dev/null
t1=$(date +%s.%N)
echo "build: $(calc "round($t1 - $t0, 2)") s"

load() { # PATH -> seconds to load every tensor onto the GPU
        python3 - "$1" <<'PY'
import sys, time, torch
from safetensors.torch import load_file
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t = time.perf_counter()
d = load_file(sys.argv[1], device="cuda")
torch.cuda.synchronize()
el = time.perf_counter() - t
nbytes = sum(v.numel() * v.element_size() for v in d.values())
print(f"{el:.3f} {nbytes}")
PY
}
mount_cairn() {
        run "$bundle/bin/cairnfs" "$work/store#gpu/model:v1" "$mnt" -o "cache_dir=$work/cache"
}

drop
read -r local_cold bytes < <(load "$work/src/model.safetensors")
read -r local_warm _ < <(load "$work/src/model.safetensors")
rm -rf "$work/cache"
mount_cairn
drop
read -r cairn_cold _ < <(load "$mnt/model.safetensors")
unmount
mount_cairn
drop
read -r cairn_warm _ < <(load "$mnt/model.safetensors")
unmount
drop
read -r local_cold2 _ < <(load "$work/src/model.safetensors")

gpu=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))')
gib=$(calc "$bytes / 1073741824")
rate() { printf '%.2f GiB/s' "$(calc "$gib / $1")"; }
{
        echo "GPU load check: safetensors.torch.load_file(device=\"cuda\") of $(printf '%.2f' "$gib") GiB"
        echo "on $gpu, $(nproc) CPUs, $(date -u +%Y-%m-%d), bench/gpu_load.sh (page cache drops: $drops)"
        echo
        echo "| case | seconds | throughput |"
        echo "|---|---|---|"
        echo "| local disk, cold (page cache dropped) | $local_cold | $(rate "$local_cold") |"
        echo "| local disk, cold again (after the cairn runs) | $local_cold2 | $(rate "$local_cold2") |"
        echo "| local disk, warm (page cache) | $local_warm | $(rate "$local_warm") |"
        echo "| cairn mount, cold (empty chunk cache, local store) | $cairn_cold | $(rate "$cairn_cold") |"
        echo "| cairn mount, warm (chunk cache, page cache dropped) | $cairn_warm | $(rate "$cairn_warm") |"
        echo
        printf 'cairn warm / local cold: %.2fx the time; cairn cold / local cold: %.2fx the time\n' \
                "$(calc "$cairn_warm / $local_cold")" "$(calc "$cairn_cold / $local_cold")"
} | tee "$out/gpu_load.md"
