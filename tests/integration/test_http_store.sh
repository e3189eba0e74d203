#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# An http:// store is any static server that honours Range: a volume built
# into a directory store is served by a private nginx on loopback, and
# every read-only command runs against its URL: inspect (same answers as
# from the directory), verify, and a mount whose every file, attribute and
# byte is compared with the source.  Along the way: the mount is lazy over
# HTTP too (listing the tree makes no blob request; data comes as ranged
# GETs), an unknown tag and a store with nothing in it are one-line errors,
# `cairn build` into an http:// store is refused as read-only, a server
# that is not there fails fast, https:// works with a CA file or an
# explicit --insecure and is refused without one, and once the chunks are
# cached a mount keeps serving them with the server stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

SRC=$T/src
WWW=$T/www
STORE=$WWW/store
MP=$T/mnt
REF=test/http:v1

step "building $REF into a directory store"
py gentree "$SRC" --profile small
mkdir -p "$WWW"
digest=$(build_volume "$SRC" "$STORE" "$REF")
log "manifest $digest"

step "serving the store with nginx"
nginx_start "$WWW"
URL=$NGINX_URL/store
ACCESS=$NGINX_DIR/access.log
# Every request nginx saw since line $1 of its access log.
requests_since() { tail -n +"$(($1 + 1))" "$ACCESS"; }
log_lines() { wc -l <"$ACCESS"; }

step "cairn inspect --store $URL: the same answers as from the directory"
run_timeout 60 "$CAIRN" inspect --store "$STORE" "$REF" --json >"$T/inspect-dir.json"
run_timeout 60 "$CAIRN" inspect --store "$URL" "$REF" --json >"$T/inspect-http.json" \
        2>"$T/inspect-http.err" || {
        cat "$T/inspect-http.err" >&2
        fail "cairn inspect over http failed"
}
python3 - "$T/inspect-dir.json" "$T/inspect-http.json" <<'EOF' || fail "inspect over http differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
if diff:
    print(f"inspect: directory vs http: {diff}", file=sys.stderr)
    sys.exit(1)
EOF
[[ "$(py jsonget "$T/inspect-http.json" manifest)" == "$digest" ]] ||
        fail "inspect over http names another manifest than cairn build printed"
check_sanitizer_logs

step "cairn verify --store $URL"
run_timeout 300 "$CAIRN" verify --store "$URL" "$REF" >"$T/verify.out" 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify over http failed on an intact volume"
}
log "verify: $(tail -n 1 "$T/verify.out")"
check_sanitizer_logs

step "mount over http: metadata makes no blob request"
mount_volume "$URL" "$REF" "$MP" "$T/cache"
before=$(log_lines)
find "$MP" -printf '%s %m %U %G %l\n' >/dev/null
readlink "$MP/link" >/dev/null
n=$(requests_since "$before" | grep -c '/blobs/' || true)
((n == 0)) || {
        requests_since "$before" >&2
        fail "listing and stat of the whole tree made $n blob request(s)"
}

step "a small read is one ranged GET, not a whole pack"
before=$(log_lines)
[[ "$(cat "$MP/hello.txt")" == "hello, cairn" ]] || fail "hello.txt does not read back"
requests_since "$before" >"$T/small-read.log"
n=$(grep -c '/blobs/' "$T/small-read.log" || true)
((n >= 1)) || fail "reading hello.txt made no blob request (and was not cached)"
if [[ -n "$(awk '$3 == "GET" && $4 ~ /\/blobs\// && $5 == "range=\"-\""' "$T/small-read.log")" ]]; then
        cat "$T/small-read.log" >&2
        fail "a data read fetched a whole blob instead of a range"
fi
bytes=$(awk '{ s += $2 } END { print s + 0 }' "$T/small-read.log")
((bytes <= 16 * 1024 * 1024)) || fail "reading a 13-byte file transferred $bytes bytes"
log "hello.txt: $n request(s), $bytes bytes"

step "comparing the mount with the source"
run_timeout 300 python3 "$HELPER" compare "$SRC" "$MP"
run_timeout 300 python3 "$HELPER" preads "$SRC" "$MP" multi.bin sub/medium.bin hello.txt --count 100
run_timeout 300 python3 "$HELPER" mmap "$SRC" "$MP" multi.bin sub/medium.bin
# Pack GETs: every blob but the manifest.
pack_gets=$(awk -v m="${digest#sha256:}" '$3 == "GET" && $4 ~ /\/blobs\// && index($4, m) == 0' \
        "$ACCESS" | wc -l)
full_gets=$(awk -v m="${digest#sha256:}" '$3 == "GET" && $4 ~ /\/blobs\// && index($4, m) == 0 &&
        $5 == "range=\"-\""' "$ACCESS" | wc -l)
log "pack GETs: $pack_gets, of which without a range: $full_gets"
((full_gets == 0)) || fail "the mount fetched $full_gets whole pack(s) instead of ranges"

step "with the server stopped, cached chunks still serve reads"
nginx_stop "$NGINX_DIR"
# The kernel's page cache would answer without asking cairnfs: drop it.
sync
echo 3 >/proc/sys/vm/drop_caches
run_timeout 300 python3 "$HELPER" compare "$SRC" "$MP"
stat "$MP/multi.bin" >/dev/null
umount_volume "$MP"

step "unknown tags and empty stores: one-line errors"
nginx_start "$WWW"
URL=$NGINX_URL/store
ACCESS=$NGINX_DIR/access.log
expect_failure "inspect of an unknown tag" "$CAIRN" inspect --store "$URL" test/http:nope
expect_one_line_error "inspect of an unknown tag"
expect_in_stderr "inspect of an unknown tag" "test/http:nope"
expect_failure "inspect of an unknown name" "$CAIRN" inspect --store "$URL" test/nothing:v1
expect_one_line_error "inspect of an unknown name"
expect_failure "verify of an unknown tag" "$CAIRN" verify --store "$URL" test/http:nope
expect_one_line_error "verify of an unknown tag"
mkdir -p "$MP"
expect_failure "mount of an unknown tag" "$CAIRN" mount --store "$URL" test/http:nope "$MP" \
        --cache-dir "$T/cache"
expect_one_line_error "mount of an unknown tag"
! is_mounted "$MP" || fail "a failed mount left $MP mounted"
expect_failure "inspect in a directory that is no store" \
        "$CAIRN" inspect --store "$NGINX_URL/no/store/here" "$REF"
expect_one_line_error "inspect in a directory that is no store"
expect_failure "inspect of a manifest digest that is not there" \
        "$CAIRN" inspect --store "$URL" "test/http@sha256:$(printf '0%.0s' {1..64})"
expect_one_line_error "inspect of a manifest digest that is not there"

step "cairn build into an http:// store is refused as read-only"
before=$(log_lines)
expect_failure "build into $URL" "$CAIRN" build "$SRC" --store "$URL" --tag test/http:v2
expect_one_line_error "build into an http store"
grep -qi 'read-only' "$T/last.err" || {
        cat "$T/last.err" >&2
        fail "the refusal does not say that an http store is read-only"
}
n=$(requests_since "$before" | awk '$3 != "GET" && $3 != "HEAD"' | wc -l)
((n == 0)) || fail "build sent $n write request(s) to the http store"

step "a server that is not there fails fast"
dead=$(free_port)
t0=$(date +%s)
expect_failure "inspect from a closed port" \
        "$CAIRN" inspect --store "http://127.0.0.1:$dead/store" "$REF"
expect_one_line_error "inspect from a closed port"
t1=$(date +%s)
((t1 - t0 <= 35)) || fail "inspect against a closed port took $((t1 - t0))s (deadline 30s)"

step "https://: verified against a CA file, refused without it, --insecure on request"
if ! command -v openssl >/dev/null; then
        fail "openssl (the command) is missing: scripts/deps.sh installs it"
fi
(
        cd "$T"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cairn test CA" \
                -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key \
                -out server.csr >/dev/null 2>&1
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                -extfile server.ext -out server.pem >/dev/null 2>&1
) || fail "could not make a test certificate with openssl"
nginx_start "$WWW" --tls "$T/server.pem" "$T/server.key"
HTTPS=$NGINX_URL/store
expect_failure "https with an unknown CA" "$CAIRN" inspect --store "$HTTPS" "$REF"
expect_one_line_error "https with an unknown CA"
grep -qiE 'certificate|tls|ssl|verif' "$T/last.err" || {
        cat "$T/last.err" >&2
        fail "the https refusal does not say that the certificate could not be verified"
}
run_timeout 60 "$CAIRN" inspect --store "$HTTPS" "$REF" --ca-file "$T/ca.pem" --json \
        >"$T/inspect-https.json" 2>"$T/inspect-https.err" || {
        cat "$T/inspect-https.err" >&2
        fail "inspect over https with --ca-file failed"
}
[[ "$(py jsonget "$T/inspect-https.json" manifest)" == "$digest" ]] ||
        fail "inspect over https names another manifest"
run_timeout 60 "$CAIRN" inspect --store "$HTTPS" "$REF" --insecure \
        >"$T/inspect-insecure.out" 2>"$T/inspect-insecure.err" || {
        cat "$T/inspect-insecure.err" >&2
        fail "inspect over https with --insecure failed"
}
grep -qi 'warn' "$T/inspect-insecure.err" || fail "--insecure gave no warning on stderr"
mount_volume "$HTTPS" "$REF" "$MP" "$T/cache-https" --ca-file "$T/ca.pem"
cmp "$SRC/sub/medium.bin" "$MP/sub/medium.bin" || fail "sub/medium.bin differs over https"
umount_volume "$MP"
check_sanitizer_logs
