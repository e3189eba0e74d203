#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Reads files through a mount whose backend misbehaves, and judges the result.

The rule under faults is narrow: a read either returns exactly the source's
bytes or fails with EIO.  A wrong byte, a short read before EOF, any other
errno, or a read slower than the deadline is a failure.  Each file is read
whole and in order on its own thread (1 MiB reads, like `cat`), optionally
next to random preads of one file from more threads, so that readers share
fetches while faults happen.  Files named with --must-succeed must read
completely.

Prints one JSON document (per file: bytes read, errno, seconds; pread
counts) and exits 1 with one line per violation on stderr.  Python 3
standard library only.
"""

import argparse
import errno
import json
import os
import random
import sys
import threading
import time

MiB = 1 << 20


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def read_whole(src, mnt, piece):
    out = {"size": os.stat(src).st_size, "read": 0, "errno": 0, "error": "",
           "mismatch_at": None, "short": False}
    t0 = time.monotonic()
    slowest = 0.0
    with open(src, "rb", buffering=0) as sf:
        fd = os.open(mnt, os.O_RDONLY)
        try:
            while True:
                r0 = time.monotonic()
                try:
                    got = os.read(fd, piece)
                except OSError as e:
                    out["errno"] = e.errno
                    out["error"] = errno.errorcode.get(e.errno, str(e.errno))
                    slowest = max(slowest, time.monotonic() - r0)
                    break
                slowest = max(slowest, time.monotonic() - r0)
                want = sf.read(piece)
                if got != want[:len(got)]:
                    out["mismatch_at"] = out["read"] + first_difference(got, want)
                    break
                out["read"] += len(got)
                if not got:
                    break
                if len(got) < len(want):
                    # A short read is fine only at EOF: the next read must say EOF.
                    sf.seek(out["read"])
        finally:
            os.close(fd)
    if out["errno"] == 0 and out["mismatch_at"] is None and out["read"] != out["size"]:
        out["short"] = True
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["slowest_read_s"] = round(slowest, 3)
    return out


def random_preads(src, mnt, count, seed, stop):
    rng = random.Random(seed)
    out = {"done": 0, "matched": 0, "eio": 0, "other_errors": [], "mismatches": [],
           "slowest_s": 0.0}
    size = os.stat(src).st_size
    with open(src, "rb", buffering=0) as sf:
        fd = os.open(mnt, os.O_RDONLY)
        try:
            for _ in range(count):
                if stop.is_set():
                    break
                off = rng.randrange(0, max(size, 1))
                ln = rng.choice([1, 4096, 65536, MiB, rng.randrange(1, 4 * MiB)])
                t0 = time.monotonic()
                try:
                    got = os.pread(fd, ln, off)
                except OSError as e:
                    if e.errno == errno.EIO:
                        out["eio"] += 1
                    else:
                        out["other_errors"].append(f"pread({off}, {ln}): {e}")
                    got = None
                out["slowest_s"] = max(out["slowest_s"], round(time.monotonic() - t0, 3))
                out["done"] += 1
                if got is None:
                    continue
                sf.seek(off)
                want = sf.read(ln)
                if got == want:
                    out["matched"] += 1
                else:
                    out["mismatches"].append(f"pread({off}, {ln}): {len(got)} bytes, first "
                                             f"difference at +{first_difference(got, want)}")
        finally:
            os.close(fd)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="source directory")
    p.add_argument("mnt", help="mounted volume")
    p.add_argument("files", nargs="+", help="paths relative to both")
    p.add_argument("--must-succeed", action="append", default=[],
                   help="a file that must read completely (repeatable)")
    p.add_argument("--must-fail", action="store_true",
                   help="every file must end in EIO (a dead backend)")
    p.add_argument("--preads-file", help="also pread this file at random while reading")
    p.add_argument("--preads", type=int, default=200)
    p.add_argument("--pread-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--piece", type=int, default=MiB)
    p.add_argument("--max-read-seconds", type=float, default=0,
                   help="no single read() may take longer (0: no limit)")
    a = p.parse_args()

    results = {}
    threads = []
    stop = threading.Event()

    def reader(rel):
        try:
            results[rel] = read_whole(os.path.join(a.src, rel), os.path.join(a.mnt, rel),
                                      a.piece)
        except OSError as e:
            results[rel] = {"open_error": str(e), "errno": e.errno}

    for rel in a.files:
        threads.append(threading.Thread(target=reader, args=(rel,)))
    pread_results = []
    if a.preads_file:
        for k in range(a.pread_threads):
            def preader(k=k):
                pread_results.append(random_preads(os.path.join(a.src, a.preads_file),
                                                   os.path.join(a.mnt, a.preads_file),
                                                   a.preads, a.seed + k, stop))
            threads.append(threading.Thread(target=preader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    problems = []
    for rel in a.files:
        r = results[rel]
        if "open_error" in r:
            problems.append(f"{rel}: open failed: {r['open_error']}")
            continue
        if r["mismatch_at"] is not None:
            problems.append(f"{rel}: WRONG BYTE at offset {r['mismatch_at']}")
        if r["errno"] not in (0, errno.EIO):
            problems.append(f"{rel}: read failed with {r['error']} at offset {r['read']}, "
                            f"expected EIO")
        if r["short"]:
            problems.append(f"{rel}: EOF after {r['read']} of {r['size']} bytes")
        if rel in a.must_succeed and (r["errno"] or r["read"] != r["size"]):
            problems.append(f"{rel}: must read completely, got {r['read']} of {r['size']} bytes"
                            + (f", then {r['error']}" if r["errno"] else ""))
        if a.must_fail and r["errno"] != errno.EIO:
            problems.append(f"{rel}: expected EIO from a dead backend, got "
                            f"{r['error'] or 'success'} after {r['read']} bytes")
        if a.max_read_seconds and r["slowest_read_s"] > a.max_read_seconds:
            problems.append(f"{rel}: one read took {r['slowest_read_s']}s, "
                            f"limit {a.max_read_seconds}s")
    preads = {"done": 0, "matched": 0, "eio": 0}
    for r in pread_results:
        for k in preads:
            preads[k] += r[k]
        problems += [f"{a.preads_file}: WRONG BYTES from {m}" for m in r["mismatches"]]
        problems += [f"{a.preads_file}: {m}, expected EIO" for m in r["other_errors"]]
        if a.max_read_seconds and r["slowest_s"] > a.max_read_seconds:
            problems.append(f"{a.preads_file}: one pread took {r['slowest_s']}s, "
                            f"limit {a.max_read_seconds}s")
    print(json.dumps({"files": results, "preads": preads}, sort_keys=True))
    for msg in problems:
        print(f"readcheck: {msg}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
