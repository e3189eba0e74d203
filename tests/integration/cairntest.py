#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Helpers for cairn's integration tests (python3 standard library only).

The shell tests drive the real binaries; the checks that need byte-level
care live here: generating awkward source trees, comparing a mounted volume
with its source (bytes, sizes, modes, owners, mtimes, symlink targets, both
directions of every listing), random preads and mmap reads, the EROFS
checks, and reading the on-store format (docs/FORMAT.md) to find exactly
which stored bytes belong to which chunk, so corruption tests can aim.

Every subcommand exits 0 on success and 1 with one diagnostic per problem
on stderr otherwise.  Paths are handled as bytes so that any name a Linux
file system allows (spaces, UTF-8, newlines) round-trips.
"""

import argparse
import errno
import hashlib
import json
import mmap
import os
import random
import socket
import stat
import struct
import sys
import threading

KiB = 1024
MiB = 1024 * KiB

# Chunking defaults (include/cairn/chunker.h).
CHUNK_MIN = 512 * KiB
CHUNK_AVG = 2 * MiB
CHUNK_MAX = 8 * MiB

READ_PIECE = 1 * MiB


def die(msg):
    print(f"cairntest: {msg}", file=sys.stderr)
    sys.exit(1)


def fsb(s):
    return os.fsencode(s)


def show(p):
    """Printable form of a bytes path."""
    return repr(os.fsdecode(p))


def write_file(path, data, mode=None):
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def write_random(path, size, rng=None, piece=8 * MiB):
    """size random bytes; rng=None uses os.urandom (fast, not reproducible)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(piece, left)
            f.write(rng.randbytes(n) if rng else os.urandom(n))
            left -= n


# ---------------------------------------------------------------- gentree


def gen_roundtrip(root, big_mib, rng, specials):
    os.makedirs(root)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731

    os.mkdir(j("empty_dir"))
    os.makedirs(j("nested", "a", "b", "c", "d", "e", "f", "g"))
    write_file(j("nested", "a", "b", "c", "d", "e", "f", "g", "deep.txt"), b"deep\n")
    write_file(j("nested", "a", "mid.txt"), b"middle of the tree\n")
    os.makedirs(j("nested", "a", "b", "empty_inner"))

    # Sizes around the chunker's limits: each boundary exactly and +-1 byte.
    os.mkdir(j("sizes"))
    write_file(j("sizes", "empty"), b"")
    write_file(j("sizes", "empty2"), b"")
    write_file(j("sizes", "one_byte"), b"x")
    write_file(j("sizes", "two_bytes"), b"\x00\xff")
    write_file(j("sizes", "page"), rng.randbytes(4096))
    for name, base in (("min", CHUNK_MIN), ("avg", CHUNK_AVG), ("max", CHUNK_MAX)):
        for delta, tag in ((-1, "minus1"), (0, "exact"), (1, "plus1")):
            write_random(j("sizes", f"{name}_{tag}"), base + delta, rng)
    write_random(j("sizes", "two_max_plus3"), 2 * CHUNK_MAX + 3, rng)

    os.mkdir(j("big"))
    write_random(j("big", f"random-{big_mib}M.bin"), big_mib * MiB)

    os.mkdir(j("compressible"))
    with open(j("compressible", "zeros-24M.bin"), "wb") as f:
        f.write(bytes(24 * MiB))
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    write_file(j("compressible", "text-12M.txt"), (line * (12 * MiB // len(line) + 1))[: 12 * MiB])
    # Same 1 MiB block repeated: identical chunks inside one file.
    block = rng.randbytes(MiB)
    write_file(j("compressible", "repeated-16M.bin"), block * 16)

    os.mkdir(j("links"))
    os.symlink("../sizes/one_byte", j("links", "relative"))
    os.symlink("does/not/exist", j("links", "dangling"))
    os.symlink("/etc/hostname", j("links", "absolute"))
    os.symlink("/nonexistent/cairn/target", j("links", "absolute_dangling"))
    os.symlink("../nested", j("links", "to_dir"))
    os.symlink("relative", j("links", "to_link"))
    os.symlink("loop_b", j("links", "loop_a"))
    os.symlink("loop_a", j("links", "loop_b"))
    os.symlink("weird name ü/✓", j("links", "utf8_target"))
    os.symlink("x" * 1000, j("links", "long_target"))
    os.symlink("/".join(["d" * 200] * 21)[:4095], j("links", "max_target"))

    os.mkdir(j("names"))
    for name in ("with space", " leading space", "trailing space ", "ünïcödé-名前-🚀.txt",
                 "-dash", ".hidden", "..dots", "...", "new\nline", "tab\tname", "back\\slash",
                 "quote'\"", "star*?[]", "#hash%percent", "N" * 255, "ß" * 127):
        write_file(j("names", name), name.encode("utf-8", "surrogateescape") * 3)
    os.mkdir(j("names", "dir with space ✓"))
    write_file(j("names", "dir with space ✓", "inner file"), b"inner\n")
    # A name that is not valid UTF-8: Linux allows any bytes but '/' and NUL.
    write_file(os.path.join(fsb(j("names")), b"latin1-\xe9\xff"), b"raw bytes name\n")

    # 5,000 small files: 4,000 spread over 40 directories, 1,000 in one.
    os.mkdir(j("many"))
    for d in range(40):
        dp = j("many", f"d{d:03d}")
        os.mkdir(dp)
        for i in range(100):
            write_file(os.path.join(dp, f"f{i:03d}"), rng.randbytes(rng.randrange(0, 3000)))
    os.mkdir(j("many", "flat"))
    for i in range(1000):
        write_file(j("many", "flat", f"file-{i:04d}.dat"), rng.randbytes(rng.randrange(0, 600)))

    os.mkdir(j("modes"))
    for mode in (0o755, 0o700, 0o644, 0o600, 0o444, 0o000, 0o4755, 0o2755, 0o1755, 0o777, 0o111):
        write_file(j("modes", f"m{mode:04o}"), f"mode {mode:o}\n".encode(), mode)
    for mode in (0o700, 0o1777, 0o2775, 0o555):
        os.mkdir(j("modes", f"dir{mode:04o}"))
        write_file(j("modes", f"dir{mode:04o}", "f"), b"f\n")
        os.chmod(j("modes", f"dir{mode:04o}"), mode)

    os.mkdir(j("owners"))
    write_file(j("owners", "u1234_g5678"), b"owned\n")
    os.chown(j("owners", "u1234_g5678"), 1234, 5678)
    os.mkdir(j("owners", "dir_u4321"))
    os.chown(j("owners", "dir_u4321"), 4321, 8765)
    os.symlink("u1234_g5678", j("owners", "link_u111"))
    os.lchown(j("owners", "link_u111"), 111, 222)
    write_file(j("owners", "nobody"), b"nobody\n")
    os.chown(j("owners", "nobody"), 65534, 65534)
    write_file(j("owners", "big_ids"), b"ids\n")
    os.chown(j("owners", "big_ids"), 2**31 + 7, 2**32 - 3)

    os.mkdir(j("times"))
    write_file(j("times", "epoch_plus_1"), b"1\n")
    os.utime(j("times", "epoch_plus_1"), ns=(1_000_000_000, 1_000_000_000))
    write_file(j("times", "nanoseconds"), b"ns\n")
    os.utime(j("times", "nanoseconds"), ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    write_file(j("times", "year_2100"), b"future\n")
    os.utime(j("times", "year_2100"), ns=(4_102_444_800_999_999_999, 4_102_444_800_999_999_999))
    os.symlink("nanoseconds", j("times", "link"))
    os.utime(j("times", "link"), ns=(1_234_567_890_000_000_001, 1_234_567_890_000_000_001),
             follow_symlinks=False)

    os.mkdir(j("hardlinks"))
    write_file(j("hardlinks", "original"), b"shared inode\n")
    os.link(j("hardlinks", "original"), j("hardlinks", "second_name"))

    if specials:
        os.mkdir(j("special"))
        os.mkfifo(j("special", "fifo"))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(j("special", "sock"))
        s.close()
        write_file(j("special", "regular_neighbour"), b"still here\n")

    # Directory mtimes last, after everything inside them was created.
    os.utime(j("nested", "a"), ns=(1_000_000_000_500_000_000, 1_000_000_000_500_000_000))
    os.utime(j("empty_dir"), ns=(1_500_000_000_000_000_007, 1_500_000_000_000_000_007))
    os.chmod(root, 0o755)


def gen_small(root, rng):
    """A quick tree: a few files of mixed sizes, a symlink, a subdirectory."""
    os.makedirs(os.path.join(root, "sub", "deeper"))
    write_random(os.path.join(root, "multi.bin"), 40 * MiB, rng)
    write_random(os.path.join(root, "sub", "medium.bin"), 3 * MiB + 17, rng)
    write_file(os.path.join(root, "sub", "deeper", "small.txt"), b"small file\n")
    write_file(os.path.join(root, "hello.txt"), b"hello, cairn\n")
    os.symlink("hello.txt", os.path.join(root, "link"))
    write_file(os.path.join(root, "empty"), b"")
    write_file(os.path.join(root, "ab"), b"two-letter name\n")


def gen_demo(root, rng):
    """The quickstart's fake model: config, tokenizer, two weight shards, a symlink."""
    os.makedirs(root)
    cfg = {
        "architectures": ["CairnDemoForCausalLM"],
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "vocab_size": 4096,
        "torch_dtype": "float16",
    }
    write_file(os.path.join(root, "config.json"), (json.dumps(cfg, indent=2) + "\n").encode())
    vocab = {f"tok{i}": i for i in range(4096)}
    write_file(os.path.join(root, "tokenizer.json"),
               json.dumps({"version": "1.0", "model": {"vocab": vocab}}).encode())
    for i in (1, 2):
        write_random(os.path.join(root, f"model-0000{i}-of-00002.safetensors"), 3 * MiB + i * 4099,
                     rng)
    index = {"weight_map": {f"layer.{k}": f"model-0000{1 + k % 2}-of-00002.safetensors"
                            for k in range(4)}}
    write_file(os.path.join(root, "model.safetensors.index.json"),
               (json.dumps(index, indent=2) + "\n").encode())
    os.symlink("model-00001-of-00002.safetensors", os.path.join(root, "latest.safetensors"))
    write_file(os.path.join(root, "README.md"), b"# cairn demo model\nRandom weights, not a real model.\n")


def cmd_gentree(a):
    rng = random.Random(a.seed)
    if a.profile == "roundtrip":
        gen_roundtrip(a.dir, a.big_mib, rng, a.specials)
    elif a.profile == "small":
        os.makedirs(a.dir)
        gen_small(a.dir, rng)
    elif a.profile == "demo":
        gen_demo(a.dir, rng)


# ---------------------------------------------------------------- compare


def file_digest(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(READ_PIECE)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def is_special(m):
    return not (stat.S_ISDIR(m) or stat.S_ISREG(m) or stat.S_ISLNK(m))


def cmd_compare(a):
    src, mnt = fsb(a.src), fsb(a.mnt)
    problems = []
    counts = {"dirs": 0, "files": 0, "symlinks": 0, "bytes": 0}

    def problem(msg):
        problems.append(msg)
        if len(problems) <= 50:
            print(f"compare: {msg}", file=sys.stderr)

    def same_meta(rel, s, m):
        want = [("mode", oct(s.st_mode), oct(m.st_mode)), ("uid", s.st_uid, m.st_uid),
                ("gid", s.st_gid, m.st_gid), ("mtime_ns", s.st_mtime_ns, m.st_mtime_ns)]
        if not stat.S_ISDIR(s.st_mode):
            want.append(("size", s.st_size, m.st_size))
        for what, sv, mv in want:
            if sv != mv:
                problem(f"{show(rel)}: {what} differs: source {sv}, mount {mv}")

    def walk(rel):
        sp = os.path.join(src, rel) if rel else src
        mp = os.path.join(mnt, rel) if rel else mnt
        s_entries = {e.name: e for e in os.scandir(sp)}
        m_entries = {e.name: e for e in os.scandir(mp)}
        for name in sorted(s_entries):
            e = s_entries[name]
            if is_special(e.stat(follow_symlinks=False).st_mode):
                if name in m_entries:
                    problem(f"{show(os.path.join(rel, name))}: special file present in the mount")
                continue
            if name not in m_entries:
                problem(f"{show(os.path.join(rel, name))}: missing from the mount")
        for name in sorted(m_entries):
            if name not in s_entries:
                problem(f"{show(os.path.join(rel, name))}: in the mount but not in the source")
        # listdir goes through a second, plain readdir; both must agree.
        if sorted(os.listdir(mp)) != sorted(m_entries):
            problem(f"{show(rel)}: listdir and scandir disagree")
        for name in sorted(set(s_entries) & set(m_entries)):
            r = os.path.join(rel, name) if rel else name
            se, me = s_entries[name], m_entries[name]
            s = se.stat(follow_symlinks=False)
            m = os.lstat(os.path.join(mp, name))
            same_meta(r, s, m)
            # d_type from readdir(plus) must agree with the inode.
            if me.is_dir(follow_symlinks=False) != stat.S_ISDIR(m.st_mode) or \
               me.is_symlink() != stat.S_ISLNK(m.st_mode) or \
               me.is_file(follow_symlinks=False) != stat.S_ISREG(m.st_mode):
                problem(f"{show(r)}: readdir type disagrees with lstat")
            if stat.S_ISLNK(s.st_mode):
                counts["symlinks"] += 1
                if stat.S_ISLNK(m.st_mode):
                    st, mt = os.readlink(os.path.join(sp, name)), os.readlink(os.path.join(mp, name))
                    if st != mt:
                        problem(f"{show(r)}: symlink target {st!r} != {mt!r}")
            elif stat.S_ISREG(s.st_mode):
                counts["files"] += 1
                counts["bytes"] += s.st_size
                if stat.S_ISREG(m.st_mode):
                    sd, sn = file_digest(os.path.join(sp, name))
                    md, mn = file_digest(os.path.join(mp, name))
                    if (sd, sn) != (md, mn):
                        problem(f"{show(r)}: content differs (source {sn} bytes, mount {mn})")
            elif stat.S_ISDIR(s.st_mode):
                counts["dirs"] += 1
                if stat.S_ISDIR(m.st_mode):
                    walk(r)

    same_meta(b".", os.lstat(src), os.lstat(mnt))
    walk(b"")
    os.statvfs(mnt)  # statfs must answer
    if problems:
        die(f"{len(problems)} difference(s) between {a.src} and {a.mnt}")
    print(json.dumps(counts))


def cmd_treecount(a):
    """Counts of what a build should record (specials excluded)."""
    counts = {"dirs": 0, "files": 0, "symlinks": 0, "bytes": 0}
    for dp, dns, fns in os.walk(fsb(a.dir)):
        for n in dns + fns:
            m = os.lstat(os.path.join(dp, n)).st_mode
            if stat.S_ISLNK(m):
                counts["symlinks"] += 1
            elif stat.S_ISDIR(m):
                counts["dirs"] += 1
            elif stat.S_ISREG(m):
                counts["files"] += 1
                counts["bytes"] += os.lstat(os.path.join(dp, n)).st_size
    print(json.dumps(counts))


# ---------------------------------------------------------------- reads


def cmd_preads(a):
    rng = random.Random(a.seed)
    problems = []
    lock = threading.Lock()
    pairs = []
    for rel in a.files:
        sp, mp = os.path.join(a.src, rel), os.path.join(a.mnt, rel)
        size = os.stat(sp).st_size
        pairs.append((rel, sp, mp, size))

    def offsets(size):
        # Chunk-limit multiples and their neighbours, EOF and past it, random.
        pts = [0, 1, size - 1, size, size + 1, size + 4096]
        for base in (CHUNK_MIN, CHUNK_AVG, CHUNK_MAX, 4096, MiB):
            k = base
            while k < size and len(pts) < 200:
                pts += [k - 1, k, k + 1]
                k += base * rng.randrange(1, 4)
        pts += [rng.randrange(0, max(size, 1)) for _ in range(a.count)]
        return [p for p in pts if p >= 0]

    def lengths():
        return rng.choice([1, 2, 4095, 4096, 4097, 65536, 131072 + 5, MiB, MiB + 1,
                           rng.randrange(1, 3 * MiB), rng.randrange(1, 64 * KiB)])

    jobs = []
    for rel, sp, mp, size in pairs:
        for off in offsets(size):
            jobs.append((rel, sp, mp, off, lengths()))
    rng.shuffle(jobs)

    def worker(part):
        fds = {}
        try:
            for rel, sp, mp, off, ln in part:
                if rel not in fds:
                    fds[rel] = (os.open(sp, os.O_RDONLY), os.open(mp, os.O_RDONLY))
                sfd, mfd = fds[rel]
                want = os.pread(sfd, ln, off)
                try:
                    got = os.pread(mfd, ln, off)
                except OSError as e:
                    with lock:
                        problems.append(f"{rel}: pread({off}, {ln}) failed: {e}")
                    continue
                if got != want:
                    with lock:
                        problems.append(f"{rel}: pread({off}, {ln}) returned {len(got)} bytes, "
                                        f"expected {len(want)}, equal={got == want}")
        finally:
            for sfd, mfd in fds.values():
                os.close(sfd)
                os.close(mfd)

    threads = [threading.Thread(target=worker, args=(jobs[i::a.threads],))
               for i in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in problems[:50]:
        print(f"preads: {p}", file=sys.stderr)
    if problems:
        die(f"{len(problems)} of {len(jobs)} preads differ")
    print(f"{len(jobs)} preads matched")


def cmd_mmap(a):
    rng = random.Random(a.seed)
    problems = []
    for rel in a.files:
        sp, mp = os.path.join(a.src, rel), os.path.join(a.mnt, rel)
        with open(sp, "rb") as sf, open(mp, "rb") as mf:
            size = os.fstat(sf.fileno()).st_size
            if size == 0:
                continue
            with mmap.mmap(sf.fileno(), 0, access=mmap.ACCESS_READ) as sm, \
                 mmap.mmap(mf.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if len(mm) != size:
                    problems.append(f"{rel}: mapping is {len(mm)} bytes, file {size}")
                    continue
                for _ in range(a.count):
                    off = rng.randrange(0, size)
                    ln = rng.randrange(1, 2 * MiB)
                    if mm[off:off + ln] != sm[off:off + ln]:
                        problems.append(f"{rel}: mmap bytes differ at [{off}, +{ln})")
                        break
                # Page faults across the whole file, in order.
                h1, h2 = hashlib.sha256(), hashlib.sha256()
                for off in range(0, size, 4 * MiB):
                    h1.update(sm[off:off + 4 * MiB])
                    h2.update(mm[off:off + 4 * MiB])
                if h1.digest() != h2.digest():
                    problems.append(f"{rel}: mmap of the whole file differs")
    for p in problems:
        print(f"mmap: {p}", file=sys.stderr)
    if problems:
        die(f"{len(problems)} mmap problem(s)")
    print(f"mmap matched for {len(a.files)} file(s)")


def cmd_readprefix(a):
    """Reads the mount's file sequentially until an error; checks the bytes before it."""
    out = {"prefix": 0, "errno": 0, "match": True}
    with open(a.src, "rb", buffering=0) as sf:
        fd = os.open(a.mnt, os.O_RDONLY)
        try:
            while True:
                try:
                    got = os.read(fd, a.piece)
                except OSError as e:
                    out["errno"] = e.errno
                    break
                if not got:
                    break
                want = sf.read(len(got))
                if got != want:
                    out["match"] = False
                    break
                out["prefix"] += len(got)
        finally:
            os.close(fd)
    print(json.dumps(out))


def cmd_pread1(a):
    """One pread; prints {"errno": e, "match": bool, "len": n}."""
    out = {"errno": 0, "match": False, "len": 0}
    with open(a.src, "rb") as sf:
        sf.seek(a.offset)
        want = sf.read(a.length)
    fd = os.open(a.mnt, os.O_RDONLY)
    try:
        got = os.pread(fd, a.length, a.offset)
        out["len"] = len(got)
        out["match"] = got == want
    except OSError as e:
        out["errno"] = e.errno
    finally:
        os.close(fd)
    print(json.dumps(out))


# ---------------------------------------------------------------- read-only


def cmd_erofs(a):
    mnt = a.mnt
    f = os.path.join(mnt, a.file)
    f2 = os.path.join(mnt, a.file2)
    d = os.path.join(mnt, a.dir)
    before = file_digest(f)
    new = os.path.join(mnt, "cairn-should-not-exist")
    newdir = os.path.join(d, "cairn-new-dir")
    ops = [
        ("open O_WRONLY", lambda: os.close(os.open(f, os.O_WRONLY))),
        ("open O_RDWR", lambda: os.close(os.open(f, os.O_RDWR))),
        ("open O_WRONLY|O_TRUNC", lambda: os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))),
        ("open O_APPEND", lambda: os.close(os.open(f, os.O_WRONLY | os.O_APPEND))),
        ("create", lambda: os.close(os.open(new, os.O_WRONLY | os.O_CREAT, 0o644))),
        ("create O_EXCL", lambda: os.close(os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL))),
        ("mkdir", lambda: os.mkdir(newdir)),
        ("rmdir", lambda: os.rmdir(os.path.join(mnt, a.emptydir))),
        ("unlink", lambda: os.unlink(f)),
        ("rename", lambda: os.rename(f, new)),
        ("rename over", lambda: os.rename(f, f2)),
        ("chmod", lambda: os.chmod(f, 0o600)),
        ("chown", lambda: os.chown(f, 1, 1)),
        ("truncate", lambda: os.truncate(f, 0)),
        ("symlink", lambda: os.symlink("target", new)),
        ("link", lambda: os.link(f, new)),
        ("utime", lambda: os.utime(f, (1, 1))),
        ("mkfifo", lambda: os.mkfifo(new)),
        ("setxattr", lambda: os.setxattr(f, "user.cairn", b"x")),
    ]
    problems = []
    for what, op in ops:
        try:
            op()
        except OSError as e:
            if e.errno != errno.EROFS:
                problems.append(f"{what}: failed with {errno.errorcode.get(e.errno, e.errno)}, "
                                f"expected EROFS")
        else:
            problems.append(f"{what}: succeeded on a read-only mount")
    if os.path.lexists(new) or os.path.lexists(newdir):
        problems.append("a write created an entry")
    if file_digest(f) != before:
        problems.append(f"{a.file} changed")
    for p in problems:
        print(f"erofs: {p}", file=sys.stderr)
    if problems:
        die(f"{len(problems)} write operation(s) did not fail with EROFS")
    print(f"{len(ops)} write operations failed with EROFS")


# ---------------------------------------------------------------- format


HDR = struct.Struct("<8sIIQIIQQQQQQQQIIIIQQ")
INODE = struct.Struct("<IIIIqIIQQQQ")
DIRENT = struct.Struct("<QII")
CHUNK = struct.Struct("<32sQQIIII")
BLOB = struct.Struct("<32sQ")


class Manifest:
    """A trusting reader for manifests cairn itself wrote (docs/FORMAT.md)."""

    def __init__(self, data):
        self.data = data
        (magic, self.version, _flags, self.total_size, self.inode_count, self.blob_count,
         self.dirent_count, self.chunk_count, self.strtab_size, self.inodes_off,
         self.dirents_off, self.chunks_off, self.blobs_off, self.strtab_off,
         *_rest) = HDR.unpack_from(data, 0)
        if magic != b"CAIRNIDX":
            die("not a cairn manifest")

    def inode(self, i):
        return INODE.unpack_from(self.data, self.inodes_off + i * INODE.size)

    def dirent(self, i):
        return DIRENT.unpack_from(self.data, self.dirents_off + i * DIRENT.size)

    def chunk(self, i):
        return CHUNK.unpack_from(self.data, self.chunks_off + i * CHUNK.size)

    def blob(self, i):
        return BLOB.unpack_from(self.data, self.blobs_off + i * BLOB.size)

    def name(self, off, ln):
        o = self.strtab_off + off
        return self.data[o:o + ln]

    def resolve(self, path):
        ino = 0
        for comp in [c for c in fsb(path).split(b"/") if c]:
            _m, _u, _g, _n, _t, _ns, _p, _size, first, count, _r = self.inode(ino)
            for k in range(first, first + count):
                noff, nlen, child = self.dirent(k)
                if self.name(noff, nlen) == comp:
                    ino = child
                    break
            else:
                die(f"{path}: not in the manifest")
        return ino

    def file_chunks(self, ino):
        mode, _u, _g, _n, _t, _ns, _p, size, first, count, _r = self.inode(ino)
        out = []
        for k in range(first, first + count):
            cid, foff, boff, blob, stored, csize, flags = self.chunk(k)
            out.append({"index": k, "id": cid.hex(), "file_offset": foff, "blob": blob,
                        "blob_hex": self.blob(blob)[0].hex(), "blob_offset": boff,
                        "stored_size": stored, "size": csize, "flags": flags})
        return size, out


def cmd_chunks(a):
    with open(a.manifest, "rb") as f:
        m = Manifest(f.read())
    size, chunks = m.file_chunks(m.resolve(a.path))
    print(json.dumps({"size": size, "chunks": chunks}))


def cmd_badmanifest(a):
    """Writes a manifest made invalid in one specific way (digest stays consistent)."""
    with open(a.manifest, "rb") as f:
        data = bytearray(f.read())
    m = Manifest(bytes(data))
    if a.kind == "slash-in-name":
        noff, nlen, _child = m.dirent(0)
        data[m.strtab_off + noff] = ord("/")
    elif a.kind == "dotdot-name":
        # Find a dirent whose name is at least 2 bytes and make it "..".
        for k in range(m.dirent_count):
            noff, nlen, _child = m.dirent(k)
            if nlen == 2:
                data[m.strtab_off + noff:m.strtab_off + noff + 2] = b".."
                break
        else:
            die("no two-byte name to rewrite")
    elif a.kind == "size-mismatch":
        ino = m.resolve(a.path)
        o = m.inodes_off + ino * INODE.size + 32  # the size field
        struct.pack_into("<Q", data, o, struct.unpack_from("<Q", data, o)[0] + 1)
    elif a.kind == "chunk-out-of-range":
        o = m.inodes_off + m.resolve(a.path) * INODE.size + 40  # first chunk
        struct.pack_into("<Q", data, o, m.chunk_count + 5)
    elif a.kind == "truncated":
        data = data[: len(data) // 2]
    elif a.kind == "cycle":
        # A child that points back at the root.
        o = m.dirents_off + 12  # first dirent's inode field
        struct.pack_into("<I", data, o, 0)
    elif a.kind == "version":
        struct.pack_into("<I", data, 8, 99)
    with open(a.out, "wb") as f:
        f.write(data)
    print("sha256:" + hashlib.sha256(data).hexdigest())


def cmd_flip(a):
    with open(a.file, "r+b") as f:
        f.seek(a.offset)
        b = f.read(1)
        if len(b) != 1:
            die(f"{a.file}: offset {a.offset} is past the end")
        f.seek(a.offset)
        f.write(bytes([b[0] ^ 0xFF]))


def cmd_cache_entry_ok(a):
    """Exit 0 when the cache entry is well formed (docs/FORMAT.md, "The chunk
    cache": data, zero padding, 16-byte trailer, a whole number of 4 KiB
    blocks) and its data hashes to its name."""
    with open(a.entry, "rb") as f:
        data = f.read()
    ok = False
    if len(data) >= 16 and len(data) % 4096 == 0:
        magic, size = data[-16:-8], struct.unpack_from("<I", data, len(data) - 8)[0]
        ok = (magic == b"CAIRNCE2" and (size + 16 + 4095) // 4096 * 4096 == len(data) and
              not any(data[size:-16]) and
              hashlib.sha256(data[:size]).hexdigest() == os.path.basename(a.entry))
    sys.exit(0 if ok else 1)


def cmd_jsonget(a):
    """Prints the value of the first key named KEY anywhere in the JSON document."""
    with open(a.file) as f:
        doc = json.load(f)

    def find(v):
        if isinstance(v, dict):
            if a.key in v:
                return v[a.key]
            for x in v.values():
                r = find(x)
                if r is not None:
                    return r
        elif isinstance(v, list):
            for x in v:
                r = find(x)
                if r is not None:
                    return r
        return None

    v = find(doc)
    if v is None:
        die(f"{a.file}: no key {a.key!r}")
    print(json.dumps(v) if not isinstance(v, str) else v)


def cmd_prepend(a):
    with open(a.file, "rb") as f:
        data = f.read()
    with open(a.file, "wb") as f:
        f.write(random.Random(a.seed).randbytes(a.bytes))
        f.write(data)


def cmd_randfile(a):
    """A file of random bytes, reproducible from the seed."""
    write_random(a.file, a.bytes, random.Random(a.seed))


def cmd_fuse_available(_a):
    """Exit 0 when /dev/fuse can be opened; 77 with the reason when it genuinely cannot."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EPERM):
            print(f"/dev/fuse unavailable: {e.strerror}", file=sys.stderr)
            sys.exit(77)
        raise


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("gentree")
    s.add_argument("dir")
    s.add_argument("--profile", choices=["roundtrip", "small", "demo"], required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--big-mib", type=int, default=300)
    s.add_argument("--specials", action="store_true")
    s.set_defaults(func=cmd_gentree)

    s = sub.add_parser("compare")
    s.add_argument("src")
    s.add_argument("mnt")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("treecount")
    s.add_argument("dir")
    s.set_defaults(func=cmd_treecount)

    s = sub.add_parser("preads")
    s.add_argument("src")
    s.add_argument("mnt")
    s.add_argument("files", nargs="+")
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--threads", type=int, default=4)
    s.set_defaults(func=cmd_preads)

    s = sub.add_parser("mmap")
    s.add_argument("src")
    s.add_argument("mnt")
    s.add_argument("files", nargs="+")
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--seed", type=int, default=11)
    s.set_defaults(func=cmd_mmap)

    s = sub.add_parser("readprefix")
    s.add_argument("src")
    s.add_argument("mnt")
    s.add_argument("--piece", type=int, default=128 * KiB)
    s.set_defaults(func=cmd_readprefix)

    s = sub.add_parser("pread1")
    s.add_argument("src")
    s.add_argument("mnt")
    s.add_argument("offset", type=int)
    s.add_argument("length", type=int)
    s.set_defaults(func=cmd_pread1)

    s = sub.add_parser("erofs")
    s.add_argument("mnt")
    s.add_argument("--file", required=True)
    s.add_argument("--file2", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--emptydir", required=True)
    s.set_defaults(func=cmd_erofs)

    s = sub.add_parser("chunks")
    s.add_argument("manifest")
    s.add_argument("path")
    s.set_defaults(func=cmd_chunks)

    s = sub.add_parser("badmanifest")
    s.add_argument("manifest")
    s.add_argument("out")
    s.add_argument("kind", choices=["slash-in-name", "dotdot-name", "size-mismatch",
                                    "chunk-out-of-range", "truncated", "cycle", "version"])
    s.add_argument("--path", default="")
    s.set_defaults(func=cmd_badmanifest)

    s = sub.add_parser("flip")
    s.add_argument("file")
    s.add_argument("offset", type=int)
    s.set_defaults(func=cmd_flip)

    s = sub.add_parser("cache-entry-ok")
    s.add_argument("entry")
    s.set_defaults(func=cmd_cache_entry_ok)

    s = sub.add_parser("jsonget")
    s.add_argument("file")
    s.add_argument("key")
    s.set_defaults(func=cmd_jsonget)

    s = sub.add_parser("prepend")
    s.add_argument("file")
    s.add_argument("bytes", type=int)
    s.add_argument("--seed", type=int, default=5)
    s.set_defaults(func=cmd_prepend)

    s = sub.add_parser("randfile")
    s.add_argument("file")
    s.add_argument("bytes", type=int)
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=cmd_randfile)

    s = sub.add_parser("fuse-available")
    s.set_defaults(func=cmd_fuse_available)

    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
