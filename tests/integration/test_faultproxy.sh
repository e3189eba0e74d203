#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The fault proxy itself (tests/integration/faultproxy.py), checked on the
# wire before any cairn test relies on it: a proxy that quietly passed
# everything through would make the fault tests prove nothing.  With each
# fault kind forced on every response, a plain HTTP client sees exactly
# that fault: the status and Retry-After of 503 and 429, a reset or a clean
# close part way through the body, a stall that delays but completes it, a
# Content-Range shifted away from the request with the bytes of that other
# range, a 200 with the whole object, one flipped byte (never in a ref,
# whose integrity nobody could check).  Connections are kept alive across
# faults that allow it; the blackhole answers nothing until the control
# file or SIGUSR1 turns it off; the counts written at exit match.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

mkdir -p "$T/www/store/blobs/sha256" "$T/www/store/refs/x"
py randfile "$T/www/store/blobs/sha256/obj" $((3 << 20)) --seed 9
echo "sha256:0123" >"$T/www/store/refs/x/v1"
nginx_start "$T/www"
faultproxy_start "$NGINX_PORT" --fault-rate 0 --stall-seconds 1 --retry-after 7

step "every fault kind on the wire"
run_timeout 120 python3 - "$FAULTPROXY_PORT" "$FAULTPROXY_DIR/control" \
        "$T/www/store/blobs/sha256/obj" <<'EOF' || fail "the proxy does not inject what it says"
import http.client, os, socket, sys, time

port, control, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
url = "/store/blobs/sha256/obj"
problems = []


def setc(**kv):
    with open(control + ".tmp", "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in kv.items()))
    os.replace(control + ".tmp", control)


def get(conn, a, b, target=url):
    conn.request("GET", target, headers={"Range": f"bytes={a}-{b}"})
    r = conn.getresponse()
    try:
        body = r.read()
        err = None
    except (http.client.IncompleteRead, ConnectionError) as e:
        body, err = getattr(e, "partial", b""), e
    return r, body, err


def check(cond, msg):
    if not cond:
        problems.append(msg)


a, b = 1_000_000, 1_999_999
want = data[a:b + 1]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

setc(fault_rate=0)
r, body, err = get(conn, a, b)
check(r.status == 206 and body == want, f"pass-through: {r.status}, {len(body)} bytes")
sock = conn.sock

for kind in ("503", "429"):
    setc(fault_rate=1, faults=kind)
    r, body, err = get(conn, a, b)
    check(r.status == int(kind), f"{kind}: got status {r.status}")
    if kind == "429":
        check(r.getheader("Retry-After") == "7", f"429: Retry-After {r.getheader('Retry-After')}")
    check(conn.sock is sock, f"{kind}: the connection was not kept alive")

setc(fault_rate=1, faults="wrong-range")
r, body, err = get(conn, a, b)
cr = r.getheader("Content-Range") or ""
try:
    ca, cb = map(int, cr.split()[1].split("/")[0].split("-"))
except (IndexError, ValueError):
    ca = cb = None
check(r.status == 206 and ca is not None and (ca, cb) != (a, b),
      f"wrong-range: status {r.status}, Content-Range '{cr}'")
if ca is not None:
    check(body == data[ca:cb + 1], "wrong-range: bytes do not match the range they claim")

setc(fault_rate=1, faults="full-200")
r, body, err = get(conn, a, b)
check(r.status == 200 and body == data, f"full-200: status {r.status}, {len(body)} bytes")

setc(fault_rate=1, faults="flip")
r, body, err = get(conn, a, b)
diff = [i for i in range(min(len(body), len(want))) if body[i] != want[i]]
check(r.status == 206 and len(body) == len(want) and len(diff) == 1,
      f"flip: status {r.status}, {len(body)} bytes, {len(diff)} differing")
conn.request("GET", "/store/refs/x/v1")
rr = conn.getresponse()
check(rr.read() == b"sha256:0123\n", "flip: a ref was altered")

setc(fault_rate=1, faults="stall")
t0 = time.monotonic()
r, body, err = get(conn, a, b)
dt = time.monotonic() - t0
check(r.status == 206 and body == want and dt >= 0.9, f"stall: {len(body)} bytes in {dt:.2f}s")

for kind in ("truncate", "reset"):
    setc(fault_rate=1, faults=kind)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        r, body, err = get(c, a, b)
    except (ConnectionError, http.client.RemoteDisconnected) as e:
        body, err = b"", e
    check(err is not None and len(body) < len(want) and want.startswith(body),
          f"{kind}: {len(body)} bytes, error {err!r}")
    if kind == "truncate":
        check(not isinstance(err, ConnectionResetError), "truncate: reset instead of a close")
    c.close()

setc(fault_rate=0, mode="blackhole")
time.sleep(0.1)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=1.5)
try:
    get(c, a, b)
    problems.append("blackhole: answered")
except socket.timeout:
    pass
c.close()
setc(fault_rate=0, mode="normal")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
r, body, err = get(c, a, b)
check(r.status == 206 and body == want, "after the blackhole: no normal answer")
c.close()

for p in problems:
    print(f"faultproxy: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

step "SIGUSR1 toggles the blackhole"
kill -USR1 "$FAULTPROXY_PID"
sleep 0.2
rc=0
curl -s -o /dev/null --max-time 1.5 "$FAULTPROXY_URL/store/refs/x/v1" || rc=$?
((rc == 28)) || fail "after SIGUSR1 the proxy answered (curl exit $rc, expected a timeout)"
kill -USR1 "$FAULTPROXY_PID"
sleep 0.2
[[ "$(curl -s --max-time 5 "$FAULTPROXY_URL/store/refs/x/v1")" == "sha256:0123" ]] ||
        fail "after a second SIGUSR1 the proxy does not answer"

step "the counts written at exit"
faultproxy_stop "$FAULTPROXY_DIR"
python3 - "$FAULTPROXY_DIR/stats.json" <<'EOF' || fail "the fault counts are wrong"
import json, sys
d = json.load(open(sys.argv[1]))
want = {"503": 1, "429": 1, "wrong-range": 1, "full-200": 1, "flip": 1, "stall": 1,
        "truncate": 1, "reset": 1}
if d["faults"] != want:
    print(f"faultproxy: counts {d['faults']}, expected {want}", file=sys.stderr)
    sys.exit(1)
if d["blackholed_requests"] + d["blackholed_connections"] < 2:
    print(f"faultproxy: {d['blackholed_requests']} blackholed requests", file=sys.stderr)
    sys.exit(1)
EOF
