#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Chunk-cache helpers for test_cache_cli.sh (python3 standard library only).

watch: samples the size of a cache directory until told to stop, in two
ways.  A walk of chunks/ sums the entries' sizes, but a walk is not an
instant: an entry counted early may be evicted and another written into a
shard visited later, so a raw walk can over-count.  The size it asserts on
is therefore certified: only entries seen, with the same inode, by two
consecutive walks are summed; each of them existed from its first sighting
to its second, so all of them existed together at the end of the first
walk, and their sum is a lower bound of the real size at that instant.
When the cache lives on its own tmpfs, statvfs() gives the exact bytes in
use at each instant as well (tmpfs charges whole 4 KiB pages, which is
exactly how the cache accounts its entries).

damage: flips a byte of a cache entry's data, optionally rewriting its
CRC-32C so that only re-hashing can tell (the CRC is first checked to be
reproducible, so that the "fixed" case really is one).

count: entries and apparent bytes under chunks/.
"""

import argparse
import json
import os
import struct
import sys
import time

MAGIC = b"CAIRNCE2"
# The last 16 bytes of an entry, after the data and its zero padding
# (docs/FORMAT.md, "The chunk cache").
TRAILER = struct.Struct("<8sII")  # magic, data size, CRC-32C of the data
ALIGN = 4096


def io_size(size):
    """Length of the entry file of a size-byte chunk."""
    return (size + TRAILER.size + ALIGN - 1) // ALIGN * ALIGN


def die(msg):
    print(f"cachewatch: {msg}", file=sys.stderr)
    sys.exit(1)


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        crc = (crc >> 8) ^ t[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def walk(cache):
    """{path: (inode, size)} of every entry under chunks/ right now."""
    found = {}
    chunks = os.path.join(cache, "chunks")
    try:
        shards = list(os.scandir(chunks))
    except FileNotFoundError:
        return found
    for shard in shards:
        try:
            entries = list(os.scandir(shard.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # evicted since the listing
            found[e.path] = (st.st_ino, st.st_size)
    return found


def fs_used(path):
    s = os.statvfs(path)
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def cmd_watch(a):
    samples = 0
    max_raw = max_certified = max_used = 0
    prev = None
    deadline = time.monotonic() + a.timeout
    while not os.path.exists(a.stop):
        if time.monotonic() > deadline:
            die(f"not told to stop within {a.timeout}s")
        if a.statvfs:
            max_used = max(max_used, fs_used(a.cache))
        cur = walk(a.cache)
        if a.statvfs:
            max_used = max(max_used, fs_used(a.cache))
        raw = sum(size for _, size in cur.values())
        max_raw = max(max_raw, raw)
        if prev is not None:
            both = sum(size for p, (ino, size) in cur.items() if prev.get(p, (None,))[0] == ino)
            max_certified = max(max_certified, both)
        prev = cur
        samples += 1
        if samples == 1 and a.ready:
            open(a.ready, "w").close()
        time.sleep(a.interval)
    with open(a.out, "w") as f:
        json.dump({"samples": samples, "max_walk_raw": max_raw,
                   "max_walk_certified": max_certified, "max_fs_used": max_used}, f)


def cmd_damage(a):
    with open(a.entry, "r+b") as f:
        blob = f.read()
        if len(blob) < TRAILER.size + 2:
            die(f"{a.entry}: too short for an entry")
        magic, size, crc = TRAILER.unpack_from(blob, len(blob) - TRAILER.size)
        if magic != MAGIC or io_size(size) != len(blob) or size < 2:
            die(f"{a.entry}: not a cache entry (magic {magic!r}, size {size}, {len(blob)} bytes)")
        data = bytearray(blob[:size])
        if crc32c(data) != crc:
            die(f"{a.entry}: the trailer CRC is not CRC-32C of the data: this helper is wrong")
        pos = len(data) // 2
        data[pos] ^= 0x01
        trailer = TRAILER.pack(magic, size, crc32c(data) if a.fix_crc else crc)
        f.seek(0)
        f.write(bytes(data) + blob[size:len(blob) - TRAILER.size] + trailer)


def cmd_count(a):
    found = walk(a.cache)
    print(json.dumps({"entries": len(found),
                      "bytes": sum(size for _, size in found.values())}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("watch")
    s.add_argument("cache")
    s.add_argument("stop", help="stop once this file exists")
    s.add_argument("out", help="JSON results")
    s.add_argument("--statvfs", action="store_true", help="the cache is alone on its filesystem")
    s.add_argument("--ready", help="create this file once the first sample is taken")
    s.add_argument("--interval", type=float, default=0.002)
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("damage")
    s.add_argument("entry")
    s.add_argument("--fix-crc", action="store_true")
    s.set_defaults(func=cmd_damage)

    s = sub.add_parser("count")
    s.add_argument("cache")
    s.set_defaults(func=cmd_count)

    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
