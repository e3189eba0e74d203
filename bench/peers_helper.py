#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Measuring helpers of bench/peers.sh.

gen-safetensors: writes a safetensors file of N float16 matrices with
normally distributed values (plus one small float32 vector per matrix, like
the norms of a transformer layer), through the safetensors library itself
so that the file is what a real loader expects.  Normal values are what
weights look like: not quite incompressible, unlike random bytes.

ttfb: time to first byte of 4 KiB reads at COUNT random 4 KiB-aligned
offsets of a file (os.pread, each read timed alone) or of a URL (HTTP range
GETs on one keep-alive connection, the raw ceiling).  The offsets come from
a seeded generator, so every reader is asked for the same ones.

st-load: opens a safetensors file with safe_open(framework="numpy") (the
library maps the file) and calls get_tensor for every key; prints the time
that took and, computed afterwards and outside the timing, a digest of
every tensor's bytes so that the caller can tell that each reader got the
same weights.

Each prints one JSON object on stdout.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import sys
import time
import urllib.parse


def die(msg):
    print(f"peers_helper: {msg}", file=sys.stderr)
    sys.exit(1)


def offsets(size, count, seed):
    if size < 4096:
        die(f"the file has {size} bytes, fewer than one 4 KiB block")
    rng = random.Random(seed)
    blocks = size // 4096
    return [rng.randrange(blocks) * 4096 for _ in range(count)]


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with p% of them at or below it."""
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))  # ceil(len * p / 100)
    return s[int(rank) - 1]


def cmd_gen_safetensors(a):
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(a.seed)
    # rows x 4096 float16 = MIB MiB
    rows = a.mib * 1024 * 1024 // (4096 * 2)
    tensors = {}
    for i in range(a.tensors):
        w = rng.standard_normal((rows, 4096), dtype=np.float32)
        w *= 0.02
        tensors[f"layers.{i:02d}.weight"] = w.astype(np.float16)
        del w
        tensors[f"layers.{i:02d}.norm"] = rng.standard_normal(4096, dtype=np.float32)
    save_file(tensors, a.path, metadata={"generator": "cairn bench/peers.sh"})
    print(json.dumps({"path": a.path, "bytes": os.path.getsize(a.path),
                      "tensors": len(tensors)}))


def http_ttfb(url, offs, deadline):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
    conn.request("HEAD", u.path)
    r = conn.getresponse()
    r.read()
    size = int(r.getheader("Content-Length"))
    lat = []
    for off in offs(size):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        conn.request("GET", u.path, headers={"Range": f"bytes={off}-{off + 4095}"})
        r = conn.getresponse()
        body = r.read()
        t1 = time.perf_counter()
        if r.status != 206 or len(body) != 4096:
            die(f"GET {url} range at {off}: status {r.status}, {len(body)} bytes")
        lat.append(t1 - t0)
    conn.close()
    return lat


def file_ttfb(path, offs, deadline):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        lat = []
        for off in offs(size):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            data = os.pread(fd, 4096, off)
            t1 = time.perf_counter()
            if len(data) != 4096:
                die(f"{path}: pread at {off} returned {len(data)} bytes")
            lat.append(t1 - t0)
    finally:
        os.close(fd)
    return lat


def cmd_ttfb(a):
    deadline = time.monotonic() + a.timeout
    offs = lambda size: offsets(size, a.count, a.seed)  # noqa: E731
    if a.target.startswith("http://"):
        lat = http_ttfb(a.target, offs, deadline)
    else:
        lat = file_ttfb(a.target, offs, deadline)
    if not lat:
        die(f"{a.target}: no read finished within {a.timeout}s")
    ms = [x * 1000 for x in lat]
    print(json.dumps({"reads": len(ms), "asked": a.count, "p50_ms": percentile(ms, 50),
                      "p99_ms": percentile(ms, 99), "max_ms": max(ms),
                      "first_ms": ms[0]}))


def cmd_st_load(a):
    from safetensors import safe_open

    t0 = time.perf_counter()
    loaded = []
    with safe_open(a.path, framework="numpy") as f:
        for key in f.keys():
            loaded.append((key, f.get_tensor(key)))
    t1 = time.perf_counter()
    h = hashlib.sha256()
    nbytes = 0
    for key, t in sorted(loaded, key=lambda kt: kt[0]):
        h.update(key.encode())
        h.update(t.tobytes())
        nbytes += t.nbytes
    print(json.dumps({"secs": t1 - t0, "tensors": len(loaded), "bytes": nbytes,
                      "digest": h.hexdigest()}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("gen-safetensors")
    s.add_argument("path")
    s.add_argument("--tensors", type=int, default=24)
    s.add_argument("--mib", type=int, default=32, help="size of each matrix")
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(fn=cmd_gen_safetensors)
    s = sub.add_parser("ttfb")
    s.add_argument("target", help="a file, or an http:// URL")
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--seed", type=int, default=4)
    s.add_argument("--timeout", type=float, default=120, help="stop asking after this many s")
    s.set_defaults(fn=cmd_ttfb)
    s = sub.add_parser("st-load")
    s.add_argument("path")
    s.set_defaults(fn=cmd_st_load)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
