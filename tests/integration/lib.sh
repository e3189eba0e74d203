# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Shared helpers of the integration tests, sourced by each test_*.sh.
#
# A test gets a private scratch directory, $T = $CAIRN_SCRATCH/<test name>,
# wiped at start (after unmounting anything a crashed earlier run left
# mounted in it) and removed again when the test passes.  Every mount made
# through mount_volume() is recorded, and an EXIT trap unmounts them all
# whatever happened, so a failing or killed test never leaves a mount behind.
# After an unmount we wait for the cairnfs process to exit, so that a
# sanitizer build's leak check in the daemon has run: sanitizer reports of
# every process the test starts go to $T/sanitizer/ (cairnfs's stderr is
# /dev/null once it daemonizes) and fail the test.
#
# Environment (set by tests/CMakeLists.txt; defaults suit a manual run from
# the repository root): CAIRN_BIN (the build's bin/), CAIRN_TESTS_SRC (the
# tests/ directory), CAIRN_SCRATCH (where scratch directories go).

set -Eeuo pipefail

_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_repo=$(cd "$_lib_dir/../.." && pwd)
CAIRN_BIN=${CAIRN_BIN:-$_repo/build/bin}
CAIRN_TESTS_SRC=${CAIRN_TESTS_SRC:-$_repo/tests}
CAIRN_SCRATCH=${CAIRN_SCRATCH:-$_repo/build/scratch}

TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
CAIRN=$CAIRN_BIN/cairn
CAIRNFS=$CAIRN_BIN/cairnfs
HELPER=$_lib_dir/cairntest.py
mkdir -p "$CAIRN_SCRATCH"
T=$(realpath "$CAIRN_SCRATCH")/$TEST_NAME
# Default time limit of one command (seconds); slow steps pass their own.
CMD_TIMEOUT=${CMD_TIMEOUT:-300}

declare -A _mount_pid=() # mountpoint -> cairnfs pid
_mounts=()               # mountpoints in mount order
_started=$(date +%s)

log() { printf '[%s %4ss] %s\n' "$TEST_NAME" "$(($(date +%s) - _started))" "$*" >&2; }
step() { log "--- $*"; }

fail() {
        log "FAIL: $*"
        exit 1
}

skip() {
        log "SKIP: $*"
        exit 77
}

_on_error() {
        local rc=$1 line=$2 cmd=$3
        log "FAIL: line $line: '$cmd' exited with status $rc"
}
trap '_on_error $? $LINENO "$BASH_COMMAND"' ERR

# py SUBCOMMAND ARGS...: the Python helpers.
py() { python3 "$HELPER" "$@"; }

# run_timeout SECS CMD...: runs CMD with a hard time limit; its status, with
# a diagnostic when the limit was hit.
run_timeout() {
        local secs=$1 rc=0
        shift
        timeout -k 10 "$secs" "$@" || rc=$?
        if ((rc == 124 || rc == 137)); then
                log "timed out after ${secs}s: $*"
        fi
        return "$rc"
}

# ---------------------------------------------------------------- mounts

# The mountpoints currently in this namespace's mount table (escapes decoded).
_mount_table() {
        local _a _b _c _d mp _rest
        while read -r _a _b _c _d mp _rest; do
                printf '%b\n' "$mp"
        done </proc/self/mountinfo
}

is_mounted() { _mount_table | grep -qxF -- "$1"; }

# The fstype of the mount at $1 (e.g. fuse.cairnfs).
mount_fstype() {
        local _a _b _c _d mp _e _f rest
        while read -r _a _b _c _d mp _e _f rest; do
                [[ "$(printf '%b' "$mp")" == "$1" ]] || continue
                # Optional fields end at "-"; the fstype follows it.
                rest=${rest#*- }
                echo "${rest%% *}"
                return 0
        done </proc/self/mountinfo
        return 1
}

# The pid of the cairnfs process serving mountpoint $1, or nothing.
_daemon_pid() {
        local mp=$1 p exe
        for p in /proc/[0-9]*; do
                exe=$(readlink "$p/exe" 2>/dev/null) || continue
                [[ "${exe##*/}" == cairnfs ]] || continue
                if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$mp"; then
                        echo "${p#/proc/}"
                        return 0
                fi
        done
        return 0
}

# Remembers a mount made outside mount_volume() (e.g. with mount(8)).
track_mount() {
        local mp=$1 pid
        pid=$(_daemon_pid "$mp")
        [[ -n "$pid" ]] || fail "no cairnfs process serves $mp"
        _mount_pid[$mp]=$pid
        _mounts+=("$mp")
}

# mount_volume STORE REF MOUNTPOINT CACHE_DIR [cairn mount options...]
mount_volume() {
        local store=$1 ref=$2 mp=$3 cache=$4 rc=0
        shift 4
        mkdir -p "$mp"
        run_timeout 60 "$CAIRN" mount --store "$store" "$ref" "$mp" --cache-dir "$cache" "$@" \
                >"$T/mount.out" 2>"$T/mount.err" || rc=$?
        if ((rc != 0)); then
                cat "$T/mount.err" >&2
                fail "cairn mount $ref at $mp exited with $rc"
        fi
        is_mounted "$mp" || fail "cairn mount returned 0 but $mp is not mounted"
        [[ "$(mount_fstype "$mp")" == fuse.cairnfs ]] ||
                fail "$mp is mounted as '$(mount_fstype "$mp")', expected fuse.cairnfs"
        track_mount "$mp"
}

# Waits for the daemon of a mount that went away; fails if it lingers.
_wait_daemon() {
        local mp=$1 pid=${_mount_pid[$1]:-} i
        [[ -n "$pid" ]] || return 0
        for ((i = 0; i < 300; i++)); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.1
        done
        log "cairnfs (pid $pid) still running 30s after $mp was unmounted; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        return 1
}

_forget_mount() {
        local mp=$1 m keep=()
        for m in "${_mounts[@]}"; do
                [[ "$m" == "$mp" ]] || keep+=("$m")
        done
        _mounts=("${keep[@]}")
        unset "_mount_pid[$mp]"
}

# umount_volume MOUNTPOINT [umount command...]: unmounts (with `cairn umount`
# unless a command is given) and checks that the daemon exited cleanly.
umount_volume() {
        local mp=$1 rc=0
        shift
        if (($#)); then
                run_timeout 60 "$@" "$mp" || rc=$?
        else
                run_timeout 60 "$CAIRN" umount "$mp" || rc=$?
        fi
        ((rc == 0)) || fail "unmounting $mp exited with $rc"
        ! is_mounted "$mp" || fail "$mp is still mounted after unmounting"
        _wait_daemon "$mp" || { _forget_mount "$mp" && fail "cairnfs did not exit after unmount"; }
        _forget_mount "$mp"
        check_sanitizer_logs
}

# Last-resort unmount for cleanup: never fails, never hangs for long.
_force_umount() {
        local mp=$1
        is_mounted "$mp" || return 0
        timeout -k 5 20 "$CAIRN" umount "$mp" >/dev/null 2>&1 ||
                timeout -k 5 20 fusermount3 -u "$mp" >/dev/null 2>&1 ||
                timeout -k 5 20 umount "$mp" >/dev/null 2>&1 ||
                umount -l "$mp" >/dev/null 2>&1 || fusermount3 -uz "$mp" >/dev/null 2>&1 || true
        is_mounted "$mp" && log "warning: could not unmount $mp"
        return 0
}

# ---------------------------------------------------------------- checks

# Sanitizer reports of any process this test started fail the test.
check_sanitizer_logs() {
        local f found=0
        for f in "$T"/sanitizer/*; do
                [[ -f "$f" && "$f" != *.seen ]] || continue
                found=1
                log "sanitizer report $f:"
                cat "$f" >&2
                mv "$f" "$f.seen"
        done
        ((found == 0)) || fail "a sanitizer reported errors (see above)"
}

# expect_failure DESCRIPTION CMD...: CMD must exit non-zero, neither by a
# signal nor by timing out.  Its output is left in $T/last.out and $T/last.err.
expect_failure() {
        local desc=$1 rc=0
        shift
        run_timeout "$CMD_TIMEOUT" "$@" >"$T/last.out" 2>"$T/last.err" || rc=$?
        if ((rc == 0)); then
                cat "$T/last.err" >&2
                fail "$desc: succeeded, expected a failure"
        fi
        if ((rc >= 124)); then
                cat "$T/last.err" >&2
                fail "$desc: exited with $rc (timeout or signal), expected a clean failure"
        fi
        check_sanitizer_logs
}

# The last command's stderr is exactly one non-empty line (a one-line error).
expect_one_line_error() {
        local desc=$1 n
        n=$(grep -c . "$T/last.err" || true)
        if ((n != 1)); then
                cat "$T/last.err" >&2
                fail "$desc: expected a one-line error on stderr, got $n lines"
        fi
        log "ok: $desc: $(cat "$T/last.err")"
}

# expect_in_stderr DESCRIPTION FIXED_STRING
expect_in_stderr() {
        if ! grep -qF -- "$2" "$T/last.err"; then
                cat "$T/last.err" >&2
                fail "$1: stderr does not mention '$2'"
        fi
}

# build_volume SRC STORE NAME:TAG [cairn build options...]: prints the digest.
build_volume() {
        local src=$1 store=$2 ref=$3 rc=0 digest
        shift 3
        run_timeout "$CMD_TIMEOUT" "$CAIRN" build "$src" --store "$store" --tag "$ref" "$@" \
                >"$T/build.out" 2>"$T/build.err" || rc=$?
        if ((rc != 0)); then
                cat "$T/build.err" >&2
                fail "cairn build $src -> $ref exited with $rc"
        fi
        digest=$(tail -n 1 "$T/build.out")
        [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] ||
                fail "cairn build: last stdout line is '$digest', expected sha256:<64 hex>"
        check_sanitizer_logs
        echo "$digest"
}

# The path of blob DIGEST (sha256:hex or hex) in a plain-directory store.
blob_path() { echo "$1/blobs/sha256/${2#sha256:}"; }

# "name size" of every blob in a store, sorted.
blob_list() { find "$1/blobs" -type f -printf '%f %s\n' | sort; }

# ---------------------------------------------------------------- setup

require_fuse() {
        [[ -e /dev/fuse ]] || skip "/dev/fuse does not exist"
        local rc=0
        py fuse-available || rc=$?
        if ((rc == 77)); then
                skip "/dev/fuse cannot be opened"
        elif ((rc != 0)); then
                fail "checking /dev/fuse failed"
        fi
        command -v fusermount3 >/dev/null || fail "fusermount3 is missing (package fuse3)"
}

_cleanup() {
        local rc=$? mp
        set +e
        trap - ERR
        for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do
                mp=${_mounts[i]}
                log "cleanup: unmounting $mp"
                _force_umount "$mp"
                _wait_daemon "$mp"
        done
        # Anything else mounted under our scratch directory (mount(8) tests).
        while read -r mp; do
                [[ "$mp" == "$T"/* ]] && _force_umount "$mp"
        done < <(_mount_table)
        if compgen -G "$T/sanitizer/*" >/dev/null; then
                for f in "$T"/sanitizer/*; do
                        [[ "$f" == *.seen ]] && continue
                        log "sanitizer report $f:"
                        cat "$f" >&2
                        ((rc == 0)) && rc=1
                done
        fi
        if ((rc == 0)); then
                rm -rf "$T"
                log "PASS ($(($(date +%s) - _started))s)"
        elif ((rc == 77)); then
                rm -rf "$T"
        else
                log "FAILED with status $rc; scratch kept at $T"
        fi
        exit "$rc"
}

_setup() {
        local mp
        [[ -x "$CAIRN" ]] || fail "$CAIRN is missing: build first"
        [[ -x "$CAIRNFS" ]] || fail "$CAIRNFS is missing: build first"
        # A crashed earlier run may have left mounts here; never rm -rf into them.
        while read -r mp; do
                if [[ "$mp" == "$T"/* ]]; then
                        log "unmounting stale $mp"
                        umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || true
                fi
        done < <(_mount_table)
        rm -rf "$T"
        mkdir -p "$T/sanitizer"
        # Sanitizer reports to files: cairnfs's stderr is gone once it daemonizes.
        export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$T/sanitizer/asan"
        export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$T/sanitizer/ubsan"
        export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}log_path=$T/sanitizer/lsan"
        trap _cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        log "scratch $T, binaries $CAIRN_BIN"
}

_setup
