#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# An s3:// store on a real S3 server that verifies every signature and
# payload hash: versitygw (posix backend, a private directory) on loopback.
# `cairn build --store s3://BUCKET/PREFIX` uploads the volume (a pack over
# 64 MiB as a multipart upload, parts in parallel; the ref last); a second
# build uploads nothing (HEAD finds every blob); inspect and verify work
# against the bucket; a mount from it reads every file back byte for byte.
# Credentials come the AWS way: the environment, or a profile of the shared
# credentials file; virtual-hosted addressing is chosen from the config
# file.  Keys with spaces, '+', '~', ':' and '%' in the prefix work.  A wrong
# secret or an unknown access key is an authentication error that names
# the S3 code and never shows the secret; a missing tag is "not found".
#
# versitygw is installed by scripts/deps.sh; if it is missing the test
# installs it with `go install` into the scratch directory, and skips only
# when that is impossible (no Go, no module proxy).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"
require_fuse

VERSITYGW_VERSION=v1.8.0
SRC=$T/src
GW=$T/gw
MP=$T/mnt
BUCKET=cairn-test
STORE=s3://$BUCKET/models/prod
REF=test/s3:v1
MiB=$((1024 * 1024))
MULTIPART_THRESHOLD=$((64 * MiB))

# ---------------------------------------------------------------- the server

find_versitygw() {
        local go gopath c
        for c in "$(command -v versitygw || true)" /usr/local/bin/versitygw \
                "$CAIRN_SCRATCH/.tools/bin/versitygw"; do
                [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
        done
        go=$(command -v go || echo /usr/local/go/bin/go)
        [[ -x "$go" ]] || return 1
        gopath=$("$go" env GOPATH 2>/dev/null || true)
        if [[ -n "$gopath" && -x "$gopath/bin/versitygw" ]]; then
                echo "$gopath/bin/versitygw"
                return 0
        fi
        log "versitygw is not installed (scripts/deps.sh installs it); trying go install"
        mkdir -p "$CAIRN_SCRATCH/.tools/bin"
        GOBIN=$CAIRN_SCRATCH/.tools/bin GOFLAGS=-mod=mod run_timeout 600 "$go" install \
                "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2 || return 1
        echo "$CAIRN_SCRATCH/.tools/bin/versitygw"
}

VERSITYGW=$(find_versitygw) || skip "versitygw is not installed and cannot be built (needs Go)"
log "versitygw: $VERSITYGW"

# Random credentials for this run: the secret checks below look for them verbatim.
rand() { python3 -c "import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))" "$1"; }
ACCESS_KEY=cairn$(rand 6 | tr -dc 'A-Za-z0-9')
SECRET_KEY=$(rand 30)
WRONG_SECRET=$(rand 30)

# gw_start: versitygw with virtual-hosted names under "localhost", which
# curl resolves to loopback by itself.
gw_start() {
        versitygw_start "$VERSITYGW" "$GW/data" "$GW/stdout" "$ACCESS_KEY" "$SECRET_KEY" \
                --virtual-domain localhost --access-log "$GW/access.log" ||
                fail "versitygw does not start"
}

# Signed S3 requests with curl for setup; the credentials go through a
# config file on a pipe, not argv.
s3curl() {
        curl -sS --fail-with-body -K <(printf 'user = "%s:%s"\n' "$ACCESS_KEY" "$SECRET_KEY") \
                --aws-sigv4 "aws:amz:us-east-1:s3" "$@"
}

step "starting versitygw"
gw_start
ENDPOINT=http://127.0.0.1:$GW_PORT
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3curl -X PUT -H "x-amz-content-sha256: $EMPTY_SHA256" "$ENDPOINT/$BUCKET" >/dev/null ||
        fail "cannot create bucket '$BUCKET' with a signed PUT"
# The server checks signatures: an unsigned request and a badly signed one are refused.
code=$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/$BUCKET/nothing")
[[ "$code" == 403 ]] || fail "versitygw answered an anonymous GET with $code, expected 403"

# The AWS configuration of every cairn command below: no host files, no profile.
unset AWS_PROFILE AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN
export AWS_CONFIG_FILE=$T/no-such-aws-config
export AWS_SHARED_CREDENTIALS_FILE=$T/no-such-aws-credentials
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY

ACCESS=$GW/access.log
log_lines() { if [[ -f "$ACCESS" ]]; then wc -l <"$ACCESS"; else echo 0; fi; }
# The S3 operations (s3_PutObject, ...) logged since line $1, one per line: "OP KEY".
# Fields: owner bucket [date zone] ip requester id OPERATION KEY URI status ...
ops_since() { tail -n +"$(($1 + 1))" "$ACCESS" | awk '{ print $8, $9 }'; }

# The secret of this run must never show up in what a command printed.
expect_no_secret() {
        local f
        for f in "$@"; do
                if grep -qF -e "$SECRET_KEY" -e "$WRONG_SECRET" "$f"; then
                        fail "$f contains a secret key"
                fi
        done
}

# ---------------------------------------------------------------- build

step "building $REF into $STORE (a pack over 64 MiB: multipart)"
py gentree "$SRC" --profile small
py randfile "$SRC/big.bin" $((80 * MiB + 4321)) --seed 31
before=$(log_lines)
run_timeout "$CMD_TIMEOUT" "$CAIRN" -v build "$SRC" --store "$STORE" --tag "$REF" \
        >"$T/build.out" 2>"$T/build.err" || {
        tail -n 50 "$T/build.err" >&2
        fail "cairn build into $STORE failed"
}
expect_no_secret "$T/build.out" "$T/build.err"
digest=$(tail -n 1 "$T/build.out")
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || fail "cairn build printed '$digest', not a digest"
check_sanitizer_logs
ops_since "$before" >"$T/build.ops"

# What the server stored, seen through its own directory.
OBJ=$GW/data/$BUCKET/models/prod
[[ "$(cat "$OBJ/refs/test/s3/v1")" == "$digest" ]] ||
        fail "refs/test/s3/v1 on the server holds '$(cat "$OBJ/refs/test/s3/v1")', not $digest"
[[ -f "$OBJ/blobs/sha256/${digest#sha256:}" ]] || fail "the manifest blob is not on the server"
big_blob=$(find "$OBJ/blobs/sha256" -type f -size +$((MULTIPART_THRESHOLD / 1024))k | head -n 1)
[[ -n "$big_blob" ]] || fail "no blob over 64 MiB on the server: the multipart path was not taken"
for f in "$OBJ"/blobs/sha256/*; do
        [[ "$(sha256sum "$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] ||
                fail "blob $(basename "$f") on the server does not hash to its name"
done
big_key=models/prod/blobs/sha256/$(basename "$big_blob")
grep -qx "s3_CreateMultipartUpload $big_key" "$T/build.ops" ||
        fail "the blob over 64 MiB was not uploaded with CreateMultipartUpload"
parts=$(grep -cx "s3_UploadPart $big_key" "$T/build.ops" || true)
((parts >= 2)) || fail "the multipart upload had $parts part(s)"
grep -qx "s3_CompleteMultipartUpload $big_key" "$T/build.ops" ||
        fail "the multipart upload was not completed"
! grep -q "s3_AbortMultipartUpload" "$T/build.ops" || fail "a multipart upload was aborted"
log "multipart: $parts parts for $(stat -c %s "$big_blob") bytes"
# The ref goes last, after every blob it needs.
[[ "$(grep -E '^s3_(PutObject|CompleteMultipartUpload) ' "$T/build.ops" | tail -n 1)" == \
        "s3_PutObject models/prod/refs/test/s3/v1" ]] || {
        cat "$T/build.ops" >&2
        fail "the ref was not the last object written"
}

step "an unchanged rebuild uploads nothing new"
before=$(log_lines)
d2=$(build_volume "$SRC" "$STORE" "$REF")
[[ "$d2" == "$digest" ]] || fail "an unchanged rebuild gave $d2, the first build $digest"
ops_since "$before" >"$T/rebuild.ops"
n=$(grep -cE '^s3_(PutObject|CreateMultipartUpload|UploadPart) models/prod/blobs/' \
        "$T/rebuild.ops" || true)
((n == 0)) || {
        cat "$T/rebuild.ops" >&2
        fail "the rebuild uploaded $n blob object(s) again"
}
grep -q '^s3_HeadObject models/prod/blobs/' "$T/rebuild.ops" ||
        fail "the rebuild did not ask the server (HEAD) which blobs it has"

# ---------------------------------------------------------------- read

step "cairn inspect and cairn verify against $STORE"
run_timeout 60 "$CAIRN" inspect --store "$STORE" "$REF" --json >"$T/inspect.json" \
        2>"$T/inspect.err" || {
        cat "$T/inspect.err" >&2
        fail "cairn inspect over s3 failed"
}
[[ "$(py jsonget "$T/inspect.json" manifest)" == "$digest" ]] ||
        fail "inspect names another manifest than cairn build printed"
run_timeout 300 "$CAIRN" verify --store "$STORE" "$REF" >"$T/verify.out" 2>"$T/verify.err" || {
        cat "$T/verify.err" >&2
        fail "cairn verify over s3 failed on an intact volume"
}
log "verify: $(tail -n 1 "$T/verify.out")"
check_sanitizer_logs

step "mounting from $STORE and comparing every file"
mount_volume "$STORE" "$REF" "$MP" "$T/cache"
pid=$(_daemon_pid "$MP")
if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -e "$SECRET_KEY" -e "$ACCESS_KEY:"; then
        fail "the secret is in cairnfs's command line"
fi
before=$(log_lines)
run_timeout 300 python3 "$HELPER" compare "$SRC" "$MP"
run_timeout 300 python3 "$HELPER" preads "$SRC" "$MP" big.bin multi.bin hello.txt --count 100
ops_since "$before" >"$T/mount.ops"
grep -q '^s3_GetObject models/prod/blobs/' "$T/mount.ops" || fail "the mount read no blob from S3"
umount_volume "$MP"
expect_no_secret "$T/mount.out" "$T/mount.err"

step "a missing tag is 'not found', not an authentication error"
expect_failure "inspect of an unknown tag" "$CAIRN" inspect --store "$STORE" test/s3:nope
expect_one_line_error "inspect of an unknown tag"
expect_in_stderr "inspect of an unknown tag" "test/s3:nope"
! grep -qi 'authentication' "$T/last.err" || fail "a missing tag was reported as an auth failure"

step "credentials from a profile of the shared credentials file"
cat >"$T/aws-credentials" <<EOF
# cairn test
[default]
aws_access_key_id = nobody
aws_secret_access_key = $WRONG_SECRET

[cairn-test]
aws_access_key_id = $ACCESS_KEY
aws_secret_access_key = $SECRET_KEY
EOF
cat >"$T/aws-config" <<EOF
[profile cairn-test]
region = us-east-1
endpoint_url = $ENDPOINT
EOF
(
        unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL AWS_REGION
        export AWS_SHARED_CREDENTIALS_FILE=$T/aws-credentials AWS_CONFIG_FILE=$T/aws-config
        AWS_PROFILE=cairn-test run_timeout 60 "$CAIRN" inspect --store "$STORE" "$REF" \
                >"$T/profile.out" 2>"$T/profile.err" || {
                cat "$T/profile.err" >&2
                fail "inspect with credentials from AWS_PROFILE failed"
        }
        # The default profile has the wrong secret: refused.
        expect_failure "the default profile's wrong secret" \
                env AWS_ENDPOINT_URL="$ENDPOINT" "$CAIRN" inspect --store "$STORE" "$REF"
        expect_in_stderr "the default profile's wrong secret" "authentication"
        expect_no_secret "$T/last.err" "$T/profile.err"
        # A profile that does not exist is an error, not anonymous access.
        expect_failure "an unknown profile" env AWS_PROFILE=nope "$CAIRN" inspect --store "$STORE" \
                "$REF"
        expect_in_stderr "an unknown profile" "nope"
) || exit 1

step "virtual-hosted addressing (from the config file's s3 addressing_style)"
cat >"$T/aws-config-vhost" <<EOF
[default]
s3 =
    addressing_style = virtual
EOF
before=$(log_lines)
AWS_CONFIG_FILE=$T/aws-config-vhost AWS_ENDPOINT_URL=http://localhost:$GW_PORT \
        run_timeout 60 "$CAIRN" inspect --store "$STORE" "$REF" >"$T/vhost.out" \
        2>"$T/vhost.err" || {
        cat "$T/vhost.err" >&2
        fail "inspect with virtual-hosted addressing failed"
}
# Virtual-hosted requests name the bucket in the host, so their paths start with the key.
tail -n +"$((before + 1))" "$ACCESS" | awk '$8 == "s3_GetObject" { print $10 }' >"$T/vhost.uris"
grep -q '^/models/prod/refs/test/s3/v1$' "$T/vhost.uris" || {
        cat "$T/vhost.uris" >&2
        fail "the ref was not read with a virtual-hosted request"
}
! grep -q "^/$BUCKET/" "$T/vhost.uris" || fail "path-style requests with virtual-hosted addressing"

step "odd characters in keys: spaces, '+', '~', ':', '%', '=' and UTF-8 in the prefix"
ODD_STORE="s3://$BUCKET/odd prefix/a+b~c:d%25=é"
mkdir -p "$T/src-odd"
cp "$SRC/hello.txt" "$SRC/sub/medium.bin" "$T/src-odd/"
d_odd=$(build_volume "$T/src-odd" "$ODD_STORE" test/odd:v1)
[[ -f "$GW/data/$BUCKET/odd prefix/a+b~c:d%25=é/refs/test/odd/v1" ]] ||
        fail "the odd prefix did not reach the server verbatim"
run_timeout 60 "$CAIRN" verify --store "$ODD_STORE" test/odd:v1 >/dev/null 2>"$T/odd.err" || {
        cat "$T/odd.err" >&2
        fail "verify from a prefix with odd characters failed"
}
log "odd prefix: $d_odd"

step "uploads through a proxy that fails a quarter of the requests (503, 429, resets)"
# Every attempt is signed anew (a retry after a backoff carries a fresh
# date); a part, a PUT or a completion whose answer was lost is retried; the
# server checks each signature and payload hash on the way.
faultproxy_start "$GW_PORT" --fault-rate 0.25 --faults 503,429,reset --seed 7 --retry-after 0
mkdir -p "$T/src-faults"
py randfile "$T/src-faults/weights.bin" $((70 * MiB + 77)) --seed 41
py randfile "$T/src-faults/small.bin" $((2 * MiB)) --seed 42
d_faults=$(AWS_ENDPOINT_URL=$FAULTPROXY_URL CAIRN_S3_PART_SIZE=5M \
        build_volume "$T/src-faults" "$STORE" test/faults:v1)
faultproxy_stop "$FAULTPROXY_DIR"
injected=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
print(s["injected"], json.dumps(s["faults"]), s["requests"])' "$FAULTPROXY_DIR/stats.json") ||
        fail "no fault counts from the proxy"
log "faultproxy: injected, by kind, requests: $injected"
injected=${injected%% *}
((injected > 0)) || fail "the proxy injected no fault: the step proved nothing"
run_timeout 300 "$CAIRN" verify --store "$STORE" test/faults:v1 >/dev/null \
        2>"$T/verify-faults.err" || {
        cat "$T/verify-faults.err" >&2
        fail "the volume uploaded through faults does not verify"
}
mount_volume "$STORE" test/faults:v1 "$MP" "$T/cache-faults"
run_timeout 300 python3 "$HELPER" compare "$T/src-faults" "$MP"
umount_volume "$MP"
log "uploaded through faults: $d_faults"

# ---------------------------------------------------------------- auth failures

step "a wrong secret is an authentication error that does not show the secret"
for cmd in build inspect verify mount; do
        case $cmd in
        build) args=(build "$SRC" --store "$STORE" --tag test/s3:v2) ;;
        inspect) args=(inspect --store "$STORE" "$REF") ;;
        verify) args=(verify --store "$STORE" "$REF") ;;
        mount) mkdir -p "$MP"
                args=(mount --store "$STORE" "$REF" "$MP" --cache-dir "$T/cache-wrong") ;;
        esac
        before=$(log_lines)
        # Through the environment: a secret has no business in anyone's argv.
        export AWS_SECRET_ACCESS_KEY=$WRONG_SECRET
        expect_failure "$cmd with a wrong secret" "$CAIRN" "${args[@]}"
        export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
        expect_one_line_error "$cmd with a wrong secret"
        grep -qi 'authentication' "$T/last.err" || {
                cat "$T/last.err" >&2
                fail "$cmd with a wrong secret: the error does not say authentication failed"
        }
        expect_in_stderr "$cmd with a wrong secret" "SignatureDoesNotMatch"
        expect_no_secret "$T/last.err" "$T/last.out"
        ! is_mounted "$MP" || fail "a mount with a wrong secret is mounted"
        n=$(ops_since "$before" | grep -cE '^s3_(PutObject|CreateMultipartUpload|UploadPart) ' ||
                true)
        ((n == 0)) || fail "$cmd with a wrong secret wrote $n object(s)"
done
[[ ! -e "$OBJ/refs/test/s3/v2" ]] || fail "a build with a wrong secret wrote its ref"

step "an unknown access key is an authentication error too"
expect_failure "inspect with an unknown access key" \
        env AWS_ACCESS_KEY_ID=nosuchkey "$CAIRN" inspect --store "$STORE" "$REF"
expect_one_line_error "inspect with an unknown access key"
grep -qi 'authentication' "$T/last.err" || {
        cat "$T/last.err" >&2
        fail "an unknown access key is not reported as an authentication failure"
}
expect_no_secret "$T/last.err"

step "a bucket that does not exist is named"
expect_failure "inspect in a missing bucket" "$CAIRN" inspect --store s3://no-such-bucket/x "$REF"
expect_one_line_error "inspect in a missing bucket"
expect_in_stderr "inspect in a missing bucket" "no-such-bucket"
check_sanitizer_logs
