#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of cairn-csi through its real gRPC API.

Driven by test_csi_e2e.sh, which builds the volumes, starts nginx, and
generates the Python gRPC client from csi/csi.proto (the project's own
proto) into --gen.  This script plays kubelet: it starts cairn-csi on a
unix socket with a private kubelet directory, state directory and cache,
and makes the calls kubelet makes, with the paths and volume_context keys
kubelet uses, then checks what is on the node after each call: the mount
table, the daemons, the bytes behind every mount.

Scenarios: identity and node capabilities; Stage -> Publish into two
targets -> every file compared with its source -> Unpublish -> Unstage,
from a local store, an HTTP store and (when the shell found nginx
usable as a path-style S3 server) an S3 store behind a proxy that only
serves requests signed with the canary credentials, which proves the
secrets reached cairnfs; inline ephemeral volumes; idempotent repeats of
every call; each error code the plugin returns (InvalidArgument for missing
fields, untrusted paths and bad volume_context values, NotFound,
AlreadyExists, FailedPrecondition); a canary secret that must never show
in the plugin's output, an error message, /proc/*/cmdline or
/proc/*/environ of any process, or a file left behind; kill -9 of the
plugin with volumes published (still readable; re-adopted by the restarted
plugin, which unpublishes and unstages them cleanly); and a daemon killed
under a staged volume, remounted by the next Stage and Publish.

Exits 0 when every check passed, 1 at the first failure with the reason
and the tail of the plugin's log on stderr.
"""

import argparse
import errno
import hashlib
import http.client
import http.server
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import uuid

import grpc

# Set in main() once --gen is known.
pb = None
pb_grpc = None

DRIVER = "cairn.csi.dev"
NODE_ID = "e2e-node"
RPC_TIMEOUT = 120
C = grpc.StatusCode


class Failure(Exception):
    pass


def log(msg):
    print(f"[csi_e2e] {msg}", file=sys.stderr, flush=True)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------- node state


def _unescape(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = bytearray(), 0
    b = field.encode()
    while i < len(b):
        if b[i] == 0x5C and i + 3 < len(b) and all(0x30 <= c <= 0x37 for c in b[i + 1 : i + 4]):
            out.append(int(b[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return out.decode(errors="surrogateescape")


def mounts():
    """[(mountpoint, fstype, per-mount options, super options)] in mount order."""
    out = []
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            lf, rf = left.split(" "), right.split(" ")
            out.append((_unescape(lf[4]), rf[0], lf[5], rf[2] if len(rf) > 2 else ""))
    return out


def mounts_at(path):
    return [m for m in mounts() if m[0] == path]


def mounts_under(root):
    return [m[0] for m in mounts() if m[0] == root or m[0].startswith(root + "/")]


def daemons():
    """{pid: argv} of every cairnfs process."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{p}/exe"))
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if exe == "cairnfs" or (argv and os.path.basename(argv[0]) == "cairnfs"):
            out[int(p)] = argv
    return out


def daemons_for(path):
    return [pid for pid, argv in daemons().items() if path in argv]


def wait_until(what, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise Failure(f"timed out after {timeout:.0f}s waiting until {what}")


# ---------------------------------------------------------------- S3 credentials


class AuthProxy:
    """An S3 front for nginx that only serves requests signed with our canary.

    GET and HEAD are passed to nginx (Range included) only when the request
    carries SigV4 credentials of the canary access key and the canary session
    token; anything else gets 403.  A volume that mounts through it proves
    that the secrets kubelet handed to the plugin reached cairnfs.
    """

    RELAY = (
        "Content-Length",
        "Content-Range",
        "Content-Type",
        "Accept-Ranges",
        "ETag",
        "Last-Modified",
    )

    def __init__(self, upstream, key_id, token):
        host, port = upstream.split("//", 1)[1].rstrip("/").split(":")
        proxy = self
        self.lock = threading.Lock()
        self.authorized = 0
        self.refused = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def relay(self, method):
                auth = self.headers.get("Authorization", "")
                if (
                    f"Credential={key_id}/" not in auth
                    or self.headers.get("X-Amz-Security-Token") != token
                ):
                    with proxy.lock:
                        proxy.refused += 1
                    body = b"<Error><Code>AccessDenied</Code></Error>"
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if method == "GET":
                        self.wfile.write(body)
                    return
                with proxy.lock:
                    proxy.authorized += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                fwd = {"Range": self.headers["Range"]} if self.headers.get("Range") else {}
                conn.request(method, self.path, headers=fwd)
                r = conn.getresponse()
                body = r.read()
                self.send_response(r.status)
                for h in AuthProxy.RELAY:
                    if r.getheader(h) is not None:
                        self.send_header(h, r.getheader(h))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body)
                conn.close()

            def do_GET(self):
                self.relay("GET")

            def do_HEAD(self):
                self.relay("HEAD")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the plugin


class Plugin:
    def __init__(self, a):
        self.bin = a.plugin
        self.kubelet = a.kubelet_dir
        self.state = a.state_dir
        self.cache = a.cache_dir
        self.sock = os.path.join(a.scratch, "csi", "csi.sock")
        self.logpath = os.path.join(a.scratch, "plugin.log")
        self.proc = None
        self.channel = None
        os.makedirs(os.path.dirname(self.sock), exist_ok=True)

    def argv(self):
        return [
            self.bin,
            f"--endpoint=unix://{self.sock}",
            f"--node-id={NODE_ID}",
            f"--state-dir={self.state}",
            f"--cache-dir={self.cache}",
            f"--kubelet-dir={self.kubelet}",
        ]

    def start(self):
        logf = open(self.logpath, "ab")
        logf.write(f"---- start {' '.join(self.argv())}\n".encode())
        logf.flush()
        # Its own session: signals aimed at the test never reach it by accident.
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.identity = pb_grpc.IdentityStub(self.channel)
        self.node = pb_grpc.NodeStub(self.channel)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"cairn-csi exited with {self.proc.returncode} while starting")
            try:
                r = self.identity.Probe(pb.ProbeRequest(), timeout=2)
                if not r.HasField("ready") or r.ready.value:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Failure("cairn-csi did not answer Probe within 30s")
            time.sleep(0.1)
        log(f"cairn-csi running (pid {self.proc.pid})")

    def kill9(self):
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.channel.close()
        log(f"killed cairn-csi (pid {pid}) with SIGKILL")

    def stop(self):
        """SIGTERM: must exit 0, promptly, with the socket removed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Failure("cairn-csi did not exit within 20s of SIGTERM")
        finally:
            self.channel.close()
        check(rc == 0, f"cairn-csi exited with {rc} on SIGTERM, expected 0")
        check(not os.path.exists(self.sock), f"cairn-csi left its socket {self.sock} behind")

    def kill_quietly(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()
        except OSError:
            return b""


# ---------------------------------------------------------------- the tests


class E2E:
    def __init__(self, a):
        self.a = a
        self.plugin = Plugin(a)
        self.k = a.kubelet_dir
        self.checks = 0
        # The canaries: random, so that a hit can only come from a leak.
        self.canary_key = "AKIA" + secrets.token_hex(8).upper()
        self.canary_secret = "cnry" + secrets.token_hex(18)
        self.canary_token = "tok" + secrets.token_hex(24)
        self.secrets = {
            "AWS_ACCESS_KEY_ID": self.canary_key,
            "AWS_SECRET_ACCESS_KEY": self.canary_secret,
            "AWS_SESSION_TOKEN": self.canary_token,
        }
        self.needles = [
            s.encode() for s in (self.canary_key, self.canary_secret, self.canary_token)
        ]
        self.local = {"store": f"file://{a.store}", "ref": a.ref_v1}
        self.local_v2 = {"store": f"file://{a.store}", "ref": a.ref_v2}
        self.http = {"store": a.http_store, "ref": f"{a.ref_v1.split(':')[0]}@{a.digest_v1}"}
        self.s3 = None
        self.proxy = None
        if a.s3_store:
            self.proxy = AuthProxy(a.s3_endpoint, self.canary_key, self.canary_token)
            self.s3 = {
                "store": a.s3_store,
                "ref": a.ref_v1,
                "endpoint": self.proxy.url,
                "region": "us-east-1",
            }

    def ok(self, msg):
        self.checks += 1
        log(f"ok: {msg}")

    # ---- paths as kubelet makes them

    def staging(self, name):
        h = hashlib.sha256(name.encode()).hexdigest()
        p = os.path.join(self.k, "plugins", "kubernetes.io", "csi", DRIVER, h, "globalmount")
        os.makedirs(p, exist_ok=True)  # kubelet creates the staging directory
        return p

    def target(self, pod_uid, name):
        p = os.path.join(self.k, "pods", pod_uid, "volumes", "kubernetes.io~csi", name, "mount")
        os.makedirs(os.path.dirname(p), exist_ok=True)  # kubelet creates the parent only
        return p

    # ---- requests as kubelet sends them

    @staticmethod
    def cap(mode=None, block=False):
        mode = pb.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY if mode is None else mode
        c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=mode))
        if block:
            c.block.SetInParent()
        else:
            c.mount.SetInParent()
        return c

    @staticmethod
    def pod_info(pod_uid, ephemeral=None):
        info = {
            "csi.storage.k8s.io/pod.name": "e2e-pod",
            "csi.storage.k8s.io/pod.namespace": "default",
            "csi.storage.k8s.io/pod.uid": pod_uid,
            "csi.storage.k8s.io/serviceAccount.name": "default",
        }
        if ephemeral is not None:
            info["csi.storage.k8s.io/ephemeral"] = ephemeral
        return info

    def secrets_for(self, ctx):
        """kubelet sends the Secret of the PV or inline volume: ours for s3:// stores."""
        return self.secrets if ctx.get("store", "").startswith("s3://") else {}

    def stage_req(self, vol_id, staging, ctx, secrets_=None, cap=None):
        return pb.NodeStageVolumeRequest(
            volume_id=vol_id,
            staging_target_path=staging,
            volume_capability=self.cap() if cap is None else cap,
            secrets=self.secrets_for(ctx) if secrets_ is None else secrets_,
            volume_context=ctx,
        )

    def publish_req(
        self,
        vol_id,
        staging,
        target,
        ctx,
        pod_uid,
        readonly=True,
        cap=None,
        ephemeral=None,
        secrets_=None,
    ):
        vc = dict(ctx)
        vc.update(self.pod_info(pod_uid, ephemeral))
        return pb.NodePublishVolumeRequest(
            volume_id=vol_id,
            staging_target_path=staging or "",
            target_path=target,
            volume_capability=self.cap() if cap is None else cap,
            readonly=readonly,
            secrets=(
                (self.secrets_for(ctx) if ephemeral == "true" else {})
                if secrets_ is None
                else secrets_
            ),
            volume_context=vc,
        )

    def call(self, method, req):
        try:
            return getattr(self.plugin.node, method)(req, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            self.no_canary(e.details() or "", f"the error message of {method}")
            raise Failure(f"{method} failed: {e.code().name}: {e.details()}") from None

    def expect_error(self, code, method, req, what):
        before = set(mounts_under(self.k))
        try:
            getattr(self.plugin.node, method)(req, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            details = e.details() or ""
            self.no_canary(details, f"the error message of {method} ({what})")
            codes = code if isinstance(code, tuple) else (code,)
            check(
                e.code() in codes,
                f"{what}: {method} returned {e.code().name} ({details}), expected "
                f"{'/'.join(c.name for c in codes)}",
            )
            check(
                set(mounts_under(self.k)) == before,
                f"{what}: the failed {method} changed the mounts under the kubelet directory",
            )
            self.ok(f"{what}: {e.code().name}: {details}")
            return
        raise Failure(f"{what}: {method} succeeded, expected {code}")

    # ---- what must hold on the node

    def compare(self, src, mnt, what):
        r = subprocess.run(
            [sys.executable, self.a.helper, "compare", src, mnt],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            sys.stderr.write(r.stderr[-4000:])
            raise Failure(f"{what}: {mnt} differs from {src}")
        self.ok(f"{what}: every file of {mnt} matches the source ({r.stdout.strip()})")

    def expect_erofs(self, mnt, what):
        for op in ("create", "mkdir"):
            try:
                if op == "create":
                    fd = os.open(
                        os.path.join(mnt, "written-by-e2e"), os.O_CREAT | os.O_WRONLY, 0o644
                    )
                    os.close(fd)
                else:
                    os.mkdir(os.path.join(mnt, "dir-by-e2e"))
            except OSError as e:
                check(
                    e.errno == errno.EROFS,
                    f"{what}: {op} in {mnt} failed with "
                    f"{errno.errorcode.get(e.errno)}, expected EROFS",
                )
                continue
            raise Failure(f"{what}: {op} in {mnt} succeeded on a read-only volume")
        self.ok(f"{what}: {mnt} is read-only (EROFS)")

    def expect_mounted(self, path, what):
        ms = mounts_at(path)
        check(len(ms) == 1, f"{what}: {len(ms)} mount(s) at {path}, expected exactly 1")
        _, fstype, opts, _ = ms[0]
        check(
            fstype.startswith("fuse"),
            f"{what}: {path} is mounted as {fstype}, expected fuse.cairnfs",
        )
        check("ro" in opts.split(","), f"{what}: {path} is mounted '{opts}', expected ro")
        try:
            os.statvfs(path)  # statfs always reaches the daemon: ENOTCONN if it is gone
        except OSError as e:
            raise Failure(f"{what}: {path} is mounted but does not answer: {e}") from None

    def expect_unmounted(self, path, what):
        check(not mounts_at(path), f"{what}: {path} is still mounted")

    def no_canary(self, text, where):
        data = text.encode(errors="replace") if isinstance(text, str) else text
        for n in self.needles:
            check(n not in data, f"a secret was found in {where}")

    def scan_for_secrets(self, what):
        """Every process's argv and environment, the plugin's output, the mount table."""
        n = 0
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            for f in ("cmdline", "environ"):
                try:
                    with open(f"/proc/{p}/{f}", "rb") as fh:
                        data = fh.read()
                except OSError:
                    continue
                n += 1
                self.no_canary(data, f"/proc/{p}/{f} ({what})")
        self.no_canary(self.plugin.log_text(), f"the plugin's output ({what})")
        with open("/proc/self/mountinfo", "rb") as fh:
            self.no_canary(fh.read(), f"/proc/self/mountinfo ({what})")
        self.ok(
            f"{what}: no secret in {n} /proc/*/cmdline and environ files, the plugin's log "
            "or the mount table"
        )

    def secret_files(self):
        """Files under the state and cache directories that hold a canary."""
        hits = []
        for top in (self.a.state_dir, self.a.cache_dir):
            for dp, _, fns in os.walk(top):
                for fn in fns:
                    p = os.path.join(dp, fn)
                    try:
                        st = os.lstat(p)
                        if not stat.S_ISREG(st.st_mode) or st.st_size > 16 * 1024 * 1024:
                            continue
                        with open(p, "rb") as fh:
                            data = fh.read()
                    except OSError:
                        continue
                    if any(n in data for n in self.needles):
                        hits.append(p)
        return hits

    def check_secret_files(self, what, allowed):
        for p in self.secret_files():
            check(allowed, f"{what}: {p} still holds a secret")
            mode = os.lstat(p).st_mode & 0o7777
            dmode = os.lstat(os.path.dirname(p)).st_mode & 0o7777
            check(mode & 0o077 == 0, f"{what}: {p} holds a secret with mode {mode:o}")
            check(dmode & 0o077 == 0, f"{what}: the directory of {p} has mode {dmode:o}")
        self.ok(f"{what}: no secret in a file {'readable by others' if allowed else 'left behind'}")

    # ---------------------------------------------------------------- scenarios

    def identity(self):
        info = self.plugin.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
        check(info.name == DRIVER, f"GetPluginInfo: name {info.name!r}, expected {DRIVER!r}")
        check(info.vendor_version != "", "GetPluginInfo: empty vendor_version")
        caps = self.plugin.identity.GetPluginCapabilities(
            pb.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
        )
        services = [c.service.type for c in caps.capabilities if c.HasField("service")]
        check(
            pb.PluginCapability.Service.CONTROLLER_SERVICE not in services,
            "GetPluginCapabilities advertises the Controller service",
        )
        ncaps = self.plugin.node.NodeGetCapabilities(
            pb.NodeGetCapabilitiesRequest(), timeout=RPC_TIMEOUT
        )
        types = {c.rpc.type for c in ncaps.capabilities}
        T = pb.NodeServiceCapability.RPC
        check(
            {T.STAGE_UNSTAGE_VOLUME, T.GET_VOLUME_STATS} <= types,
            f"NodeGetCapabilities: {sorted(types)} lacks STAGE_UNSTAGE_VOLUME or GET_VOLUME_STATS",
        )
        ninfo = self.plugin.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=RPC_TIMEOUT)
        check(ninfo.node_id == NODE_ID, f"NodeGetInfo: node_id {ninfo.node_id!r}")
        self.ok(f"identity: {info.name} {info.vendor_version}, node capabilities {sorted(types)}")

    def lifecycle(self, label, vol_id, ctx, src, targets=2):
        """Stage -> Publish x N -> compare -> stats -> Unpublish -> Unstage, with repeats."""
        staging = self.staging(vol_id)
        pods = [str(uuid.uuid4()) for _ in range(targets)]
        tps = [self.target(p, f"pv-{vol_id}") for p in pods]

        self.call("NodeStageVolume", self.stage_req(vol_id, staging, ctx))
        self.expect_mounted(staging, f"{label}: stage")
        ds = daemons_for(staging)
        check(len(ds) == 1, f"{label}: {len(ds)} cairnfs process(es) for {staging}, expected 1")
        self.call("NodeStageVolume", self.stage_req(vol_id, staging, ctx))
        self.expect_mounted(staging, f"{label}: stage repeated")
        check(daemons_for(staging) == ds, f"{label}: a repeated stage started another daemon")
        self.ok(f"{label}: staged at {staging} (daemon {ds[0]}); a repeat is a no-op")
        self.scan_for_secrets(f"{label}: staged")
        self.check_secret_files(f"{label}: staged", allowed=True)

        for pod, tp in zip(pods, tps):
            req = self.publish_req(vol_id, staging, tp, ctx, pod)
            self.call("NodePublishVolume", req)
            self.expect_mounted(tp, f"{label}: publish")
            self.call("NodePublishVolume", req)
            self.expect_mounted(tp, f"{label}: publish repeated")
        self.ok(f"{label}: published into {len(tps)} targets; repeats are no-ops")
        for tp in tps:
            self.compare(src, tp, label)
            self.expect_erofs(tp, label)
        st = self.call(
            "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=vol_id, volume_path=tps[0])
        )
        check(
            len(st.usage) >= 1
            and all(u.total >= 0 and u.used >= 0 and u.available >= 0 for u in st.usage),
            f"{label}: NodeGetVolumeStats: {st}",
        )
        self.ok(f"{label}: NodeGetVolumeStats: {len(st.usage)} usage entries")

        # Unstaging a volume that is still published would pull it from under a pod.
        self.expect_error(
            C.FAILED_PRECONDITION,
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol_id, staging_target_path=staging),
            f"{label}: unstage while published",
        )
        self.compare(src, tps[0], f"{label}: after the refused unstage")

        for tp in tps:
            req = pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=tp)
            self.call("NodeUnpublishVolume", req)
            self.expect_unmounted(tp, f"{label}: unpublish")
            check(not os.path.lexists(tp), f"{label}: unpublish left the target {tp} behind")
            self.call("NodeUnpublishVolume", req)
        self.expect_mounted(staging, f"{label}: unpublish leaves the staged volume")
        self.ok(f"{label}: unpublished (targets removed); repeats are no-ops")

        req = pb.NodeUnstageVolumeRequest(volume_id=vol_id, staging_target_path=staging)
        self.call("NodeUnstageVolume", req)
        self.expect_unmounted(staging, f"{label}: unstage")
        wait_until(f"the daemon of {staging} exits", lambda: not daemons_for(staging))
        self.call("NodeUnstageVolume", req)
        self.check_secret_files(f"{label}: unstaged", allowed=False)
        self.ok(f"{label}: unstaged, daemon gone; a repeat is a no-op")

    def ephemeral(self, label, ctx, src, other_ctx):
        pod = str(uuid.uuid4())
        vol_id = "csi-" + hashlib.sha256(pod.encode()).hexdigest()
        tp = self.target(pod, "inline-model")
        # kubelet sends SINGLE_NODE_WRITER and the pod's readOnly for inline volumes.
        writer = self.cap(pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)
        req = self.publish_req(
            vol_id, None, tp, ctx, pod, readonly=False, cap=writer, ephemeral="true"
        )
        self.call("NodePublishVolume", req)
        self.expect_mounted(tp, label)
        ds = daemons_for(tp)
        check(len(ds) == 1, f"{label}: {len(ds)} cairnfs process(es) for {tp}, expected 1")
        self.call("NodePublishVolume", req)
        self.expect_mounted(tp, f"{label}: repeated")
        check(daemons_for(tp) == ds, f"{label}: a repeated publish started another daemon")
        self.compare(src, tp, label)
        self.expect_erofs(tp, f"{label} (published with readonly=false)")
        self.scan_for_secrets(label)
        self.check_secret_files(label, allowed=True)
        # Another ref at the same target is a conflict.
        other = self.publish_req(
            vol_id, None, tp, other_ctx, pod, readonly=False, cap=writer, ephemeral="true"
        )
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodePublishVolume",
            other,
            f"{label}: another ref at a published target",
        )
        un = pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=tp)
        self.call("NodeUnpublishVolume", un)
        self.expect_unmounted(tp, f"{label}: unpublish")
        wait_until(f"the daemon of {tp} exits", lambda: not daemons_for(tp))
        self.call("NodeUnpublishVolume", un)
        self.check_secret_files(f"{label}: unpublished", allowed=False)
        self.ok(f"{label}: published, read, unpublished; repeats are no-ops")

    def errors(self):
        A = C.INVALID_ARGUMENT
        vol = "e2e-errors"
        staging = self.staging(vol)
        pod = str(uuid.uuid4())
        tp = self.target(pod, "pv-errors")
        outside = os.path.join(self.a.scratch, "outside")
        os.makedirs(os.path.join(outside, "vol"), exist_ok=True)
        # A symlinked component inside the kubelet directory, pointing out of it.
        evil_pods = os.path.join(self.k, "pods", "evil-" + pod)
        os.symlink(outside, evil_pods)
        evil_target = os.path.join(evil_pods, "vol", "mount")
        evil_staging_parent = os.path.join(
            self.k, "plugins", "kubernetes.io", "csi", DRIVER, "evil-" + pod
        )
        os.symlink(outside, evil_staging_parent)
        evil_staging = os.path.join(evil_staging_parent, "vol")
        # The last component itself a symlink.
        link_target = os.path.join(os.path.dirname(tp), "linked")
        os.symlink(outside, link_target)

        bad_paths = [
            ("a relative path", "pods/x/volumes/kubernetes.io~csi/v/mount"),
            ("a '..' component", os.path.join(self.k, "pods", "..", "..", "outside", "vol")),
            ("a path outside the kubelet directory", os.path.join(outside, "vol")),
            ("a symlinked component", evil_target),
            ("a symlink as the last component", link_target),
            ("the kubelet directory itself", self.k),
        ]
        ctx = self.local
        sctx = self.s3 or self.local  # where secrets are otherwise acceptable

        # Missing fields: InvalidArgument before anything else is looked at.
        self.expect_error(
            A, "NodeStageVolume", self.stage_req("", staging, ctx), "stage without volume_id"
        )
        self.expect_error(
            A, "NodeStageVolume", self.stage_req(vol, "", ctx), "stage without staging path"
        )
        r = self.stage_req(vol, staging, ctx)
        r.ClearField("volume_capability")
        self.expect_error(A, "NodeStageVolume", r, "stage without volume_capability")
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(vol, staging, {"ref": ctx["ref"]}),
            "stage without store",
        )
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(vol, staging, {"store": ctx["store"]}),
            "stage without ref",
        )
        self.expect_error(
            A,
            "NodePublishVolume",
            self.publish_req(vol, staging, "", ctx, pod),
            "publish without target_path",
        )
        self.expect_error(
            A,
            "NodePublishVolume",
            self.publish_req("", staging, tp, ctx, pod),
            "publish without volume_id",
        )
        r = self.publish_req(vol, staging, tp, ctx, pod)
        r.ClearField("volume_capability")
        self.expect_error(A, "NodePublishVolume", r, "publish without volume_capability")
        self.expect_error(
            A,
            "NodeUnpublishVolume",
            pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=""),
            "unpublish without target_path",
        )
        self.expect_error(
            A,
            "NodeUnpublishVolume",
            pb.NodeUnpublishVolumeRequest(volume_id="", target_path=tp),
            "unpublish without volume_id",
        )
        self.expect_error(
            A,
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=""),
            "unstage without staging path",
        )
        self.expect_error(
            A,
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id="", staging_target_path=staging),
            "unstage without volume_id",
        )
        self.expect_error(
            A,
            "NodeGetVolumeStats",
            pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=""),
            "stats without volume_path",
        )
        self.expect_error(
            A,
            "NodeGetVolumeStats",
            pb.NodeGetVolumeStatsRequest(volume_id="", volume_path=tp),
            "stats without volume_id",
        )
        # Missing fields win over everything else (a bad path as well).
        self.expect_error(
            A, "NodeStageVolume", self.stage_req("", "relative/path", {}), "stage without anything"
        )

        # Untrusted paths.
        for what, p in bad_paths:
            self.expect_error(
                A, "NodeStageVolume", self.stage_req(vol, p, ctx), f"staging path: {what}"
            )
            self.expect_error(
                A,
                "NodePublishVolume",
                self.publish_req(vol, None, p, ctx, pod, ephemeral="true"),
                f"target path: {what}",
            )
            self.expect_error(
                A,
                "NodeUnpublishVolume",
                pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=p),
                f"unpublish target path: {what}",
            )
            self.expect_error(
                A,
                "NodeUnstageVolume",
                pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=p),
                f"unstage staging path: {what}",
            )
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(vol, evil_staging, ctx),
            "staging path below a symlinked directory",
        )
        check(not mounts_under(outside), "a mount appeared outside the kubelet directory")
        check(
            os.listdir(os.path.join(outside, "vol")) == [],
            "something was created outside the " "kubelet directory through a symlink",
        )

        # volume_context values.
        bad_ctx = [
            (
                "a store of an unknown scheme",
                {"store": "ftp://example.com/store", "ref": ctx["ref"]},
            ),
            ("a store without a scheme", {"store": self.a.store, "ref": ctx["ref"]}),
            (
                "a store URL with credentials",
                {
                    "store": "http://user:" + self.canary_secret + "@127.0.0.1/store",
                    "ref": ctx["ref"],
                },
            ),
            ("a relative file:// store", {"store": "file://relative/store", "ref": ctx["ref"]}),
            (
                "a file:// store with '..'",
                {"store": f"file://{self.a.store}/../store", "ref": ctx["ref"]},
            ),
            ("a malformed ref", {"store": ctx["store"], "ref": "Not A Ref"}),
            ("a ref with a short digest", {"store": ctx["store"], "ref": "test/e2e@sha256:1234"}),
            ("a ref with an uppercase name", {"store": ctx["store"], "ref": "Test/E2E:v1"}),
            ("a ref '..' tag", {"store": ctx["store"], "ref": "test/e2e:.."}),
            ("an unknown volume_context key", dict(ctx, memorylimit="1G")),
            ("a malformed memory_limit", dict(ctx, memory_limit="lots")),
        ]
        for what, c in bad_ctx:
            self.expect_error(
                A, "NodeStageVolume", self.stage_req(vol, staging, c), f"stage with {what}"
            )
            self.expect_error(
                A,
                "NodePublishVolume",
                self.publish_req(vol, None, tp, c, pod, ephemeral="true"),
                f"inline publish with {what}",
            )
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(vol, staging, ctx, secrets_=self.secrets),
            "stage of a file:// store with secrets",
        )
        self.expect_error(
            A,
            "NodePublishVolume",
            self.publish_req(vol, None, tp, ctx, pod, ephemeral="true", secrets_=self.secrets),
            "inline publish of a file:// store with secrets",
        )
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(vol, staging, sctx, secrets_={"password": self.canary_secret}),
            "stage with an unknown secret key",
        )
        self.expect_error(
            A,
            "NodeStageVolume",
            self.stage_req(
                vol, staging, sctx, secrets_={"AWS_SECRET_ACCESS_KEY": self.canary_secret}
            ),
            "stage with a secret key but no key id",
        )
        self.expect_error(
            (A, C.FAILED_PRECONDITION),
            "NodeStageVolume",
            self.stage_req(vol, staging, ctx, cap=self.cap(block=True)),
            "stage of a block volume",
        )

        # NotFound: what the store or the node does not have.
        self.expect_error(
            C.NOT_FOUND,
            "NodeStageVolume",
            self.stage_req(vol, staging, dict(ctx, ref=self.a.ref_v1.split(":")[0] + ":nope")),
            "stage of an unknown tag",
        )
        check(
            not mounts_at(staging) and not daemons_for(staging),
            "a failed stage left a mount or a daemon",
        )
        self.expect_error(
            C.NOT_FOUND,
            "NodeGetVolumeStats",
            pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=tp),
            "stats of a volume that is not published",
        )
        self.expect_error(
            (C.FAILED_PRECONDITION, C.NOT_FOUND),
            "NodePublishVolume",
            self.publish_req(vol, staging, tp, ctx, pod),
            "publish from a staging path that is not staged",
        )

        # AlreadyExists: incompatible with what is there.
        self.call("NodeStageVolume", self.stage_req(vol, staging, ctx))
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodeStageVolume",
            self.stage_req(vol, staging, self.local_v2),
            "stage of another ref at a staged path",
        )
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodeStageVolume",
            self.stage_req("e2e-other", staging, ctx),
            "stage of another volume at a staged path",
        )
        self.call("NodePublishVolume", self.publish_req(vol, staging, tp, ctx, pod))
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodePublishVolume",
            self.publish_req("e2e-other", staging, tp, ctx, pod),
            "publish of another volume at a published target",
        )
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodePublishVolume",
            self.publish_req(vol, None, tp, ctx, pod, ephemeral="true"),
            "inline publish at a target published from a staged volume",
        )
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodeStageVolume",
            self.stage_req(vol, self.staging("e2e-errors-2"), ctx),
            "stage of a staged volume at a second staging path",
        )
        self.expect_error(
            C.NOT_FOUND,
            "NodeGetVolumeStats",
            pb.NodeGetVolumeStatsRequest(volume_id="e2e-other", volume_path=tp),
            "stats of the wrong volume at a published target",
        )
        self.expect_error(
            C.NOT_FOUND,
            "NodeUnpublishVolume",
            pb.NodeUnpublishVolumeRequest(volume_id="e2e-other", target_path=tp),
            "unpublish of the wrong volume at a published target",
        )
        self.expect_error(
            C.NOT_FOUND,
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id="e2e-other", staging_target_path=staging),
            "unstage of the wrong volume at a staged path",
        )
        self.expect_mounted(tp, "errors: the refused unpublish left the target")
        self.compare(self.a.src_v1, tp, "after the refused calls")
        self.call(
            "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=tp)
        )
        self.call(
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging),
        )
        self.expect_unmounted(staging, "errors: cleanup")
        self.scan_for_secrets("after the error cases")

    def kill_and_readopt(self):
        label = "kill -9"
        vol = "e2e-kill"
        staging = self.staging(vol)
        pods = [str(uuid.uuid4()), str(uuid.uuid4())]
        tps = [self.target(p, "pv-kill") for p in pods]
        epod = str(uuid.uuid4())
        evol = "csi-" + hashlib.sha256(epod.encode()).hexdigest()
        etp = self.target(epod, "inline")
        writer = self.cap(pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)

        self.call("NodeStageVolume", self.stage_req(vol, staging, self.local))
        for pod, tp in zip(pods, tps):
            self.call("NodePublishVolume", self.publish_req(vol, staging, tp, self.local, pod))
        ereq = self.publish_req(
            evol, None, etp, self.local_v2, epod, readonly=False, cap=writer, ephemeral="true"
        )
        self.call("NodePublishVolume", ereq)
        before = {p: daemons_for(p) for p in (staging, etp)}

        self.plugin.kill9()
        for tp in tps:
            self.compare(self.a.src_v1, tp, f"{label}: with the plugin dead")
        self.compare(self.a.src_v2, etp, f"{label}: inline, with the plugin dead")
        check(
            {p: daemons_for(p) for p in (staging, etp)} == before,
            f"{label}: the daemons changed when the plugin died",
        )

        self.plugin.start()
        self.call("NodeStageVolume", self.stage_req(vol, staging, self.local))
        self.expect_mounted(staging, f"{label}: re-stage after restart")
        check(
            daemons_for(staging) == before[staging],
            f"{label}: the restarted plugin started another daemon instead of adopting the mount",
        )
        for pod, tp in zip(pods, tps):
            self.call("NodePublishVolume", self.publish_req(vol, staging, tp, self.local, pod))
            self.expect_mounted(tp, f"{label}: re-publish after restart")
        self.call("NodePublishVolume", ereq)
        self.expect_mounted(etp, f"{label}: inline re-publish after restart")
        check(daemons_for(etp) == before[etp], f"{label}: the inline volume got a second daemon")
        st = self.call(
            "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=tps[1])
        )
        check(len(st.usage) >= 1, f"{label}: no usage from the adopted volume")
        self.expect_error(
            C.ALREADY_EXISTS,
            "NodeStageVolume",
            self.stage_req(vol, staging, self.local_v2),
            f"{label}: the adopted stage still refuses another ref",
        )
        self.ok(
            f"{label}: the restarted plugin re-adopted the staged, published and inline volumes"
        )

        for tp in tps:
            self.call(
                "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=tp)
            )
            self.expect_unmounted(tp, f"{label}: unpublish after restart")
        self.call(
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging),
        )
        self.expect_unmounted(staging, f"{label}: unstage after restart")
        self.call(
            "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=evol, target_path=etp)
        )
        self.expect_unmounted(etp, f"{label}: inline unpublish after restart")
        wait_until(
            "the adopted daemons exit", lambda: not daemons_for(staging) and not daemons_for(etp)
        )
        self.ok(f"{label}: adopted volumes unpublished and unstaged cleanly, daemons gone")

        # A restart with nothing to adopt is clean too.
        self.plugin.kill9()
        self.plugin.start()
        check(not mounts_under(self.k), f"{label}: a restart with nothing staged mounted something")

    def dead_daemon(self):
        label = "dead daemon"
        vol = "e2e-dead"
        staging = self.staging(vol)
        pod = str(uuid.uuid4())
        tp = self.target(pod, "pv-dead")
        epod = str(uuid.uuid4())
        evol = "csi-" + hashlib.sha256(epod.encode()).hexdigest()
        etp = self.target(epod, "inline")
        writer = self.cap(pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)
        self.call("NodeStageVolume", self.stage_req(vol, staging, self.local))
        self.call("NodePublishVolume", self.publish_req(vol, staging, tp, self.local, pod))
        ereq = self.publish_req(
            evol, None, etp, self.local, epod, readonly=False, cap=writer, ephemeral="true"
        )
        self.call("NodePublishVolume", ereq)

        for p in (staging, etp):
            for pid in daemons_for(p):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            "the killed daemons are gone", lambda: not daemons_for(staging) and not daemons_for(etp)
        )
        for p in (staging, tp, etp):
            try:
                os.listdir(p)
                raise Failure(f"{label}: {p} still answers with its daemon killed")
            except OSError as e:
                # ENOTCONN once the connection is gone; a request the death
                # caught in flight is aborted instead (ECONNABORTED).
                check(
                    e.errno in (errno.ENOTCONN, errno.ECONNABORTED),
                    f"{label}: {p}: {e}, expected ENOTCONN or ECONNABORTED",
                )
        self.ok(f"{label}: the mounts of killed daemons fail with ENOTCONN")

        self.call("NodeStageVolume", self.stage_req(vol, staging, self.local))
        self.expect_mounted(staging, f"{label}: re-stage")
        check(len(daemons_for(staging)) == 1, f"{label}: re-stage did not start one new daemon")
        self.compare(self.a.src_v1, staging, f"{label}: remounted staging path")
        self.call("NodePublishVolume", self.publish_req(vol, staging, tp, self.local, pod))
        self.expect_mounted(tp, f"{label}: re-publish")
        self.compare(self.a.src_v1, tp, f"{label}: re-published target")
        self.call("NodePublishVolume", ereq)
        self.expect_mounted(etp, f"{label}: inline re-publish")
        self.compare(self.a.src_v1, etp, f"{label}: re-published inline volume")
        self.ok(f"{label}: the next Stage and Publish calls remounted the dead mounts")

        self.call(
            "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=tp)
        )
        self.call(
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging),
        )
        self.call(
            "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=evol, target_path=etp)
        )
        for p in (staging, tp, etp):
            self.expect_unmounted(p, f"{label}: cleanup")
        wait_until(
            "the new daemons exit", lambda: not daemons_for(staging) and not daemons_for(etp)
        )

    def run(self):
        self.plugin.start()
        try:
            self.identity()
            self.lifecycle("local store", "e2e-local", self.local, self.a.src_v1)
            self.lifecycle("http store", "e2e-http", self.http, self.a.src_v1, targets=1)
            if self.s3:
                self.lifecycle("s3 store", "e2e-s3", self.s3, self.a.src_v1, targets=1)
                check(
                    self.proxy.authorized > 0 and self.proxy.refused == 0,
                    f"s3 store: {self.proxy.authorized} request(s) signed with the secrets "
                    f"handed to the plugin, {self.proxy.refused} without them",
                )
                self.ok(
                    f"s3 store: all {self.proxy.authorized} requests were signed with the "
                    "secrets from NodeStageVolume"
                )
            self.ephemeral("inline ephemeral", self.local, self.a.src_v1, self.local_v2)
            if self.s3:
                self.ephemeral(
                    "inline ephemeral from s3",
                    self.s3,
                    self.a.src_v1,
                    dict(self.s3, ref=self.a.ref_v2),
                )
            self.errors()
            self.kill_and_readopt()
            self.dead_daemon()
            self.scan_for_secrets("at the end")
            left = mounts_under(self.k)
            check(not left, f"mounts left under the kubelet directory: {left}")
            self.plugin.stop()
            self.no_canary(self.plugin.log_text(), "the plugin's output")
            self.ok("cairn-csi stopped cleanly on SIGTERM; nothing left mounted")
        finally:
            self.plugin.kill_quietly()
            if self.proxy:
                self.proxy.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plugin", required=True, help="the cairn-csi binary")
    p.add_argument("--gen", required=True, help="directory with csi_pb2.py and csi_pb2_grpc.py")
    p.add_argument("--scratch", required=True, help="the test's scratch directory")
    p.add_argument("--helper", required=True, help="tests/integration/cairntest.py")
    p.add_argument("--store", required=True, help="the local store directory")
    p.add_argument("--http-store", required=True, help="the same store over http://")
    p.add_argument("--s3-store", default="", help="the same store as s3://BUCKET/PREFIX")
    p.add_argument("--s3-endpoint", default="", help="the S3 endpoint URL for --s3-store")
    p.add_argument("--ref-v1", required=True)
    p.add_argument("--digest-v1", required=True)
    p.add_argument("--ref-v2", required=True)
    p.add_argument("--src-v1", required=True)
    p.add_argument("--src-v2", required=True)
    a = p.parse_args()
    a.kubelet_dir = os.path.join(a.scratch, "kubelet")
    a.state_dir = os.path.join(a.scratch, "state")
    a.cache_dir = os.path.join(a.scratch, "cache")
    for d in (a.kubelet_dir, os.path.join(a.kubelet_dir, "pods")):
        os.makedirs(d, exist_ok=True)

    global pb, pb_grpc
    sys.path.insert(0, a.gen)
    import csi_pb2  # noqa: E402  (generated at test time)
    import csi_pb2_grpc  # noqa: E402

    pb, pb_grpc = csi_pb2, csi_pb2_grpc

    t = E2E(a)
    try:
        t.run()
    except (Failure, Exception) as e:
        if not isinstance(e, Failure):
            traceback.print_exc()
        log(f"FAIL: {e}")
        tail = t.plugin.log_text()[-6000:]
        sys.stderr.write("---- plugin output (tail)\n" + tail.decode(errors="replace") + "\n")
        sys.exit(1)
    log(f"{t.checks} checks passed")


if __name__ == "__main__":
    main()
