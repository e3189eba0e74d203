#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting HTTP/1.1 reverse proxy for cairn's remote-store tests.

It sits on 127.0.0.1 in front of an upstream HTTP server (nginx serving a
store) and, for a configurable fraction of responses, misbehaves the way
real object stores and networks do: 503, 429 with Retry-After, a reset in
the middle of the body, a stall in the middle of the body, a body cut short,
a 206 for a range other than the one asked (with the bytes of that other
range, so that only the Content-Range check can catch it), a 200 with the
whole object where a range was asked, and one flipped byte (which only the
digest check can catch).  The fetch engine must retry past all of them and
the read path must never hand out a wrong byte; this proxy is how the tests
prove it.

A blackhole mode accepts connections and never answers, to prove that a
dead backend turns into EIO within the deadline instead of a hung reader.
Modes and rates change at run time, so that a test can make the backend
come back: SIGUSR1 toggles the blackhole, and a control file (--control),
polled on every request and twice a second, holds "key=value" lines
(mode=normal|blackhole, fault_rate=, faults=, stall_seconds=).

Both ends keep connections alive; the upstream connection of a client
connection is reused until a fault leaves it in an unknown state.  Bodies
are streamed in pieces, never held whole, so a 200 with a 1 GiB object
costs no memory.  Python 3 standard library only.

Output: the listening port on stdout (one line) once ready; per-request log
lines to --log; on SIGTERM/SIGINT (and on SIGUSR2, without exiting) the
counts of every injected fault as JSON to --stats-file.
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import time

FAULTS = ("503", "429", "reset", "stall", "truncate", "wrong-range", "full-200", "flip")
# Faults that need a ranged GET to mean anything.
RANGED_ONLY = ("wrong-range", "full-200")
PIECE = 256 * 1024
HEAD_LIMIT = 64 * 1024
# Hop-by-hop headers are the proxy's own business (RFC 9110, section 7.6.1).
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"expect"}
RANGE_RE = re.compile(rb"^\s*bytes=(\d+)-(\d*)\s*$")


class BadRequest(Exception):
    pass


class UpstreamError(Exception):
    pass


def parse_faults(text):
    if text.strip() in ("", "all"):
        return list(FAULTS)
    out = []
    for f in text.split(","):
        f = f.strip()
        if f not in FAULTS:
            raise ValueError(f"unknown fault '{f}' (known: {', '.join(FAULTS)})")
        out.append(f)
    return out


class Message:
    """A request or response head: first line and headers, names kept as sent."""

    def __init__(self, head):
        lines = head.split(b"\r\n")
        self.first = lines[0]
        self.headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest(f"malformed header line {line[:80]!r}")
            self.headers.append((name, value.strip()))

    def get(self, name):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def has_token(self, name, token):
        v = self.get(name)
        return v is not None and token in [t.strip().lower() for t in v.split(b",")]

    def head_bytes(self, first, drop=(), extra=()):
        out = [first]
        for n, v in self.headers:
            ln = n.lower()
            if ln in HOP_BY_HOP or ln in drop:
                continue
            out.append(n + b": " + v)
        out.extend(extra)
        return b"\r\n".join(out) + b"\r\n\r\n"


async def read_head(reader):
    """The next message head, or None at a clean EOF before any byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadRequest("connection closed inside a message head")
    except asyncio.LimitOverrunError:
        raise BadRequest(f"message head over {HEAD_LIMIT} bytes")
    return head[:-4]


class Proxy:
    def __init__(self, args):
        self.args = args
        self.upstream_host, _, port = args.upstream.rpartition(":")
        self.upstream_port = int(port)
        self.mode = "blackhole" if args.blackhole else "normal"
        self.rate = args.fault_rate
        self.faults = parse_faults(args.faults)
        self.stall_seconds = args.stall_seconds
        # Bytes per second of one response body (0: as fast as it goes).
        self.rng = random.Random(args.seed)
        self.only_re = re.compile(args.only_path.encode()) if args.only_path else None
        self.corrupt_re = re.compile(args.corrupt_path.encode())
        self.counts = {f: 0 for f in FAULTS}
        self.fault_bytes = {f: 0 for f in FAULTS}  # body bytes sent in faulted responses
        self.stats = {"requests": 0, "passed": 0, "blackholed_requests": 0,
                      "blackholed_connections": 0, "connections": 0, "client_aborts": 0,
                      "upstream_errors": 0, "bad_requests": 0, "fault_not_applicable": 0}
        self.control_mtime = None
        self.log_file = open(args.log, "a", buffering=1) if args.log else None
        self.tasks = set()
        self.started = time.monotonic()

    # ------------------------------------------------------------ control

    def log(self, msg):
        if self.log_file:
            self.log_file.write(f"{time.monotonic() - self.started:9.3f} {msg}\n")

    def poll_control(self):
        path = self.args.control
        if not path:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.control_mtime:
            return
        self.control_mtime = stamp
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            self.log(f"control: cannot read {path}: {e}")
            return
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            try:
                if key == "mode":
                    if value not in ("normal", "blackhole"):
                        raise ValueError("mode is normal or blackhole")
                    self.set_mode(value)
                elif key == "fault_rate":
                    self.rate = float(value)
                elif key == "faults":
                    self.faults = parse_faults(value)
                elif key == "stall_seconds":
                    self.stall_seconds = float(value)
                else:
                    raise ValueError("unknown key")
            except ValueError as e:
                self.log(f"control: ignoring '{line}': {e}")
        self.log(f"control: mode={self.mode} fault_rate={self.rate} "
                 f"faults={','.join(self.faults)} stall_seconds={self.stall_seconds}")

    def set_mode(self, mode):
        if mode != self.mode:
            self.log(f"mode {self.mode} -> {mode}")
            self.mode = mode

    def toggle_blackhole(self):
        self.set_mode("normal" if self.mode == "blackhole" else "blackhole")

    async def control_loop(self):
        while True:
            self.poll_control()
            await asyncio.sleep(0.5)

    def write_stats(self):
        if not self.args.stats_file:
            return
        doc = {"faults": self.counts, "injected": sum(self.counts.values()),
               "fault_body_bytes": self.fault_bytes, **self.stats,
               "mode": self.mode, "fault_rate": self.rate, "seed": self.args.seed}
        tmp = self.args.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.args.stats_file)

    # ------------------------------------------------------------ faults

    def choose_fault(self, method, path, rng_hdr):
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        if self.only_re and not self.only_re.search(path):
            return None
        ok = []
        for f in self.faults:
            if f in RANGED_ONLY and (method != b"GET" or rng_hdr is None):
                continue
            if f in ("truncate", "flip") and method != b"GET":
                continue
            if f == "flip" and not self.corrupt_re.search(path):
                continue
            ok.append(f)
        if not ok:
            self.stats["fault_not_applicable"] += 1
            return None
        return self.rng.choice(ok)

    def shifted_range(self, rng_hdr):
        """A Range value for other bytes of the same length, or None."""
        m = RANGE_RE.match(rng_hdr)
        if not m:
            return None
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else None
        n = (b - a + 1) if b is not None else 1 << 20
        if n <= 0:
            return None
        if a > 0:
            shift = -self.rng.randint(1, min(a, n))
        else:
            shift = self.rng.randint(1, n)
        a2 = a + shift
        return b"bytes=%d-%s" % (a2, b"%d" % (b + shift) if b is not None else b"")

    # ------------------------------------------------------------ plumbing

    async def open_upstream(self):
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port, limit=1 << 20),
                timeout=10)
        except (OSError, asyncio.TimeoutError) as e:
            raise UpstreamError(f"cannot connect to upstream {self.args.upstream}: {e}")
        w.transport.set_write_buffer_limits(high=1 << 20)
        return r, w

    @staticmethod
    def close(writer):
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass

    @staticmethod
    def reset(writer):
        """Closes with a TCP RST instead of a FIN: SO_LINGER with a zero timeout."""
        sock = writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()

    async def flush(self, writer):
        """Waits until every byte written so far is in the kernel."""
        writer.transport.set_write_buffer_limits(high=0)
        await writer.drain()
        writer.transport.set_write_buffer_limits(high=1 << 20)

    async def pipe(self, reader, n, writer):
        """Copies exactly n bytes (None: until EOF); writer None discards.  Returns the count."""
        done = 0
        while n is None or done < n:
            want = PIECE if n is None else min(PIECE, n - done)
            piece = await reader.read(want)
            if not piece:
                break
            done += len(piece)
            if writer is not None:
                writer.write(piece)
                await writer.drain()
        return done

    async def swallow(self, reader, writer):
        """The blackhole: read and drop whatever comes, never answer, until the peer leaves."""
        try:
            while await reader.read(PIECE):
                pass
        except (ConnectionError, OSError):
            pass
        self.close(writer)

    async def read_body_dechunked(self, reader, cap=64 << 20):
        out = bytearray()
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError) as e:
                raise UpstreamError(f"bad chunked upstream body: {e}")
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(out)
            if len(out) + size > cap:
                raise UpstreamError(f"chunked upstream body over {cap} bytes")
            out += await reader.readexactly(size)
            await reader.readexactly(2)

    async def simple_reply(self, writer, status, reason, extra=(), keep=True):
        body = f"{status} {reason} (injected by faultproxy)\n".encode()
        head = [b"HTTP/1.1 %d %s" % (status, reason.encode()),
                b"Content-Type: text/plain", b"Content-Length: %d" % len(body),
                b"Connection: " + (b"keep-alive" if keep else b"close")]
        head.extend(extra)
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()

    # ------------------------------------------------------------ one connection

    async def handle(self, creader, cwriter):
        task = asyncio.current_task()
        self.tasks.add(task)
        self.stats["connections"] += 1
        cwriter.transport.set_write_buffer_limits(high=1 << 20)
        up = [None, None]  # upstream reader, writer
        try:
            while True:
                try:
                    head = await read_head(creader)
                except BadRequest as e:
                    self.stats["bad_requests"] += 1
                    self.log(f"bad request: {e}")
                    await self.simple_reply(cwriter, 400, "Bad Request", keep=False)
                    break
                if head is None:
                    break
                self.poll_control()
                if self.mode == "blackhole":
                    self.stats["blackholed_requests"] += 1
                    self.log(f"blackhole: {head.split(b' ', 2)[:2]}")
                    await self.swallow(creader, cwriter)
                    return
                keep = await self.exchange(head, creader, cwriter, up)
                if not keep:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            self.stats["client_aborts"] += 1
            self.log(f"connection ended: {type(e).__name__}: {e}")
        except UpstreamError as e:
            self.stats["upstream_errors"] += 1
            self.log(f"upstream: {e}")
            try:
                await self.simple_reply(cwriter, 502, "Bad Gateway", keep=False)
            except (ConnectionError, OSError):
                pass
        except BadRequest as e:
            self.stats["bad_requests"] += 1
            self.log(f"bad request: {e}")
        except asyncio.CancelledError:
            pass
        finally:
            self.close(up[1])
            self.close(cwriter)
            self.tasks.discard(task)

    async def accept(self, creader, cwriter):
        self.poll_control()
        if self.mode == "blackhole":
            # Accepted, never answered: not even a request head is read.
            self.stats["blackholed_connections"] += 1
            task = asyncio.current_task()
            self.tasks.add(task)
            try:
                await self.swallow(creader, cwriter)
            except asyncio.CancelledError:
                pass
            finally:
                self.tasks.discard(task)
            return
        await self.handle(creader, cwriter)

    async def exchange(self, head, creader, cwriter, up):
        """One request and its response.  Returns whether the client connection stays open."""
        req = Message(head)
        parts = req.first.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise BadRequest(f"bad request line {req.first[:80]!r}")
        method, target, version = parts
        self.stats["requests"] += 1
        keep = not req.has_token(b"connection", b"close")
        if version == b"HTTP/1.0" and not req.has_token(b"connection", b"keep-alive"):
            keep = False
        if req.get(b"transfer-encoding") is not None:
            await self.simple_reply(cwriter, 501, "Not Implemented", keep=False)
            return False
        try:
            body_len = int(req.get(b"content-length") or b"0")
        except ValueError:
            raise BadRequest("bad Content-Length")
        path = target.split(b"?", 1)[0]
        rng_hdr = req.get(b"range")
        fault = self.choose_fault(method, path, rng_hdr)
        what = f"{method.decode()} {target.decode(errors='replace')}" + \
               (f" [{rng_hdr.decode(errors='replace')}]" if rng_hdr else "")

        if fault in ("503", "429"):
            self.counts[fault] += 1
            self.log(f"{what} -> {fault} (injected)")
            if body_len and req.has_token(b"expect", b"100-continue"):
                # The client has not sent the body yet: answer and close.
                keep = False
            else:
                await self.pipe(creader, body_len, None)
            if fault == "503":
                await self.simple_reply(cwriter, 503, "Service Unavailable", keep=keep)
            else:
                await self.simple_reply(cwriter, 429, "Too Many Requests",
                                        extra=[b"Retry-After: %d" % self.args.retry_after],
                                        keep=keep)
            return keep

        # The request as the upstream sees it.
        drop = set()
        extra = [b"Connection: keep-alive"]
        if fault == "wrong-range":
            shifted = self.shifted_range(rng_hdr)
            if shifted is None:
                self.stats["fault_not_applicable"] += 1
                fault = None
            else:
                drop.add(b"range")
                extra.append(b"Range: " + shifted)
        elif fault == "full-200":
            drop.add(b"range")
            drop.add(b"if-range")
        uhead = req.head_bytes(req.first, drop=drop, extra=extra)
        if req.has_token(b"expect", b"100-continue") and body_len:
            cwriter.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await cwriter.drain()

        reused = up[1] is not None and not up[0].at_eof()
        if not reused:
            self.close(up[1])
            up[0], up[1] = await self.open_upstream()
        ureader, uwriter = up
        try:
            uwriter.write(uhead)
            await uwriter.drain()
            if body_len:
                await self.pipe(creader, body_len, uwriter)
            resp_head = await read_head(ureader)
            if resp_head is None:
                raise ConnectionResetError("upstream closed without a response")
        except (ConnectionError, OSError, BadRequest) as e:
            self.close(uwriter)
            up[0] = up[1] = None
            if not reused or body_len:
                raise UpstreamError(f"no response: {e}")
            # A kept-alive upstream connection may have been closed as idle: one fresh try.
            up[0], up[1] = ureader, uwriter = await self.open_upstream()
            try:
                uwriter.write(uhead)
                await uwriter.drain()
                resp_head = await read_head(ureader)
            except (ConnectionError, OSError, BadRequest) as e2:
                raise UpstreamError(f"no response: {e2}")
            if resp_head is None:
                raise UpstreamError("upstream closed without a response")
        resp = Message(resp_head)
        rparts = resp.first.split(b" ", 2)
        try:
            status = int(rparts[1])
        except (IndexError, ValueError):
            raise UpstreamError(f"bad status line {resp.first[:80]!r}")

        # The upstream body's framing.
        dechunked = None
        if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            ulen = 0
        elif resp.get(b"transfer-encoding") is not None:
            dechunked = await self.read_body_dechunked(ureader)
            ulen = len(dechunked)
        elif resp.get(b"content-length") is not None:
            try:
                ulen = int(resp.get(b"content-length"))
            except ValueError:
                raise UpstreamError("bad upstream Content-Length")
        else:
            ulen = None  # until the upstream closes
        upstream_reusable = ulen is not None and not resp.has_token(b"connection", b"close")

        if fault == "wrong-range" and status != 206:
            # The shifted range was not satisfiable: a 503 is the next best lie.
            await self.pipe(ureader, ulen, None)
            if not upstream_reusable:
                self.close(uwriter)
                up[0] = up[1] = None
            self.counts["503"] += 1
            self.log(f"{what} -> 503 (injected; shifted range got {status})")
            await self.simple_reply(cwriter, 503, "Service Unavailable", keep=keep)
            return keep
        if fault is not None and status not in (200, 206):
            self.stats["fault_not_applicable"] += 1
            fault = None
        if fault in ("truncate", "flip") and not ulen:
            self.stats["fault_not_applicable"] += 1
            fault = None
        if fault == "full-200" and status != 200:
            self.stats["fault_not_applicable"] += 1
            fault = None

        extra = [b"Connection: " + (b"keep-alive" if keep else b"close")]
        drop = set()
        if dechunked is not None:
            drop.add(b"content-length")
            extra.append(b"Content-Length: %d" % ulen)
        out_head = resp.head_bytes(resp.first, drop=drop, extra=extra)
        if ulen is None:
            keep = False  # close-delimited body: so is ours

        if fault is None:
            self.stats["passed"] += 1
        else:
            self.counts[fault] += 1
        cut = None
        if fault in ("reset", "stall", "truncate", "flip") and ulen:
            cut = self.rng.randrange(0, ulen)
        mask = self.rng.randrange(1, 256)
        self.log(f"{what} -> {status}" + (f" {fault} (injected" + (f" at byte {cut}" if cut is
                                                                    not None else "") + ")"
                                          if fault else ""))

        if fault in ("reset", "stall") and not ulen:
            # No body to cut: misbehave before the head.
            if fault == "reset":
                self.reset(cwriter)
                self.close(uwriter)
                up[0] = up[1] = None
                return False
            await asyncio.sleep(self.stall_seconds)

        cwriter.write(out_head)
        sent = 0
        try:
            if dechunked is not None:
                pieces = iter([dechunked])
            else:
                pieces = None
            while ulen is None or sent < ulen:
                if pieces is not None:
                    piece = next(pieces, b"")
                else:
                    want = PIECE if ulen is None else min(PIECE, ulen - sent)
                    piece = await ureader.read(want)
                if not piece:
                    if ulen is not None:
                        # The upstream cut its body short: so do we.
                        self.stats["upstream_errors"] += 1
                        self.close(uwriter)
                        up[0] = up[1] = None
                        await self.flush(cwriter)
                        return False
                    break
                if cut is not None and sent <= cut < sent + len(piece):
                    at = cut - sent
                    if fault == "flip":
                        piece = bytearray(piece)
                        piece[at] ^= mask
                        piece = bytes(piece)
                    elif fault in ("reset", "truncate"):
                        cwriter.write(piece[:at])
                        sent += at
                        await self.flush(cwriter)
                        self.close(uwriter)
                        up[0] = up[1] = None
                        if fault == "reset":
                            self.reset(cwriter)
                        else:
                            self.close(cwriter)
                        return False
                    elif fault == "stall":
                        cwriter.write(piece[:at])
                        await self.flush(cwriter)
                        await asyncio.sleep(self.stall_seconds)
                        sent += at
                        piece = piece[at:]
                cwriter.write(piece)
                sent += len(piece)
                await cwriter.drain()
        finally:
            # How much of a broken body went out before the client gave up:
            # a client that caps what it reads stops a 200 early.
            if fault is not None:
                self.fault_bytes[fault] += sent
        if not upstream_reusable:
            self.close(uwriter)
            up[0] = up[1] = None
        return keep

    # ------------------------------------------------------------ main

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self.toggle_blackhole)
        loop.add_signal_handler(signal.SIGUSR2, self.write_stats)
        server = await asyncio.start_server(self.accept, self.args.listen, self.args.port,
                                            limit=HEAD_LIMIT, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        self.log(f"listening on {self.args.listen}:{port}, upstream {self.args.upstream}, "
                 f"mode {self.mode}, fault rate {self.rate}, faults {','.join(self.faults)}, "
                 f"seed {self.args.seed}")
        control = asyncio.ensure_future(self.control_loop())
        print(port, flush=True)
        await stop.wait()
        server.close()
        control.cancel()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.write_stats()
        self.log(f"exiting: {json.dumps(self.counts)}")


def main():
    p = argparse.ArgumentParser(
        description="Fault-injecting HTTP/1.1 reverse proxy for cairn's tests.",
        epilog=f"Fault kinds: {', '.join(FAULTS)}.  SIGUSR1 toggles the blackhole; "
               "SIGUSR2 writes the stats file; SIGTERM writes it and exits.")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--fault-rate", type=float, default=0.0,
                   help="fraction of responses to break (0..1)")
    p.add_argument("--faults", default="all", help="comma-separated fault kinds (default all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stall-seconds", type=float, default=20.0,
                   help="how long a stall lasts before the body goes on")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 429")
    p.add_argument("--only-path", default="",
                   help="regex: inject faults only into requests whose path matches")
    p.add_argument("--corrupt-path", default="/blobs/",
                   help="regex: paths whose bodies may get a flipped byte (content whose "
                        "integrity the client can check; default /blobs/)")
    p.add_argument("--blackhole", action="store_true", help="start in blackhole mode")
    p.add_argument("--control", default="", help="control file, polled (key=value lines)")
    p.add_argument("--stats-file", default="", help="JSON fault counts, written on exit")
    p.add_argument("--log", default="", help="per-request log")
    args = p.parse_args()
    if not 0 <= args.fault_rate <= 1:
        p.error("--fault-rate is between 0 and 1")
    try:
        parse_faults(args.faults)
    except ValueError as e:
        p.error(str(e))
    if ":" not in args.upstream:
        p.error("--upstream is HOST:PORT")
    try:
        asyncio.run(Proxy(args).run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
