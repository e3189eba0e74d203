#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Mounting without the cairn CLI, the way /etc/fstab and mount(8) do it.
#
# mount(8) runs /sbin/mount.fuse3 with a sanitized environment: PATH is
# dropped, so for `-t fuse.cairnfs` the helper is looked up in the default
# PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) only,
# i.e. cairnfs must be installed.  To test that form without touching the
# system, it runs in a private mount namespace with our bin directory
# bind-mounted over /usr/local/sbin.  In the test's own namespace: the
# `-t fuse` form whose source names the helper by absolute path
# ('/path/cairnfs#STORE#REF'), the same from an fstab line (mount -T with a
# private fstab file), mount.fuse3 run directly as mount(8) runs it, a
# file:// store with a digest ref, cairnfs run directly, and bad sources
# that must fail without leaving a mount.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

SRC=$T/src
STORE=$T/store
MP=$T/mnt
REF=test/fstab:v1
command -v mount.fuse3 >/dev/null || fail "mount.fuse3 is missing (package fuse3)"

mkdir -p "$SRC/dir" "$MP"
py randfile "$SRC/weights.bin" $((5 * 1024 * 1024 + 7)) --seed 31
echo '{"hidden_size": 8}' >"$SRC/config.json"
echo nested >"$SRC/dir/nested.txt"
ln -s weights.bin "$SRC/latest"
digest=$(build_volume "$SRC" "$STORE" "$REF")

# A directory holding only a "cairnfs", for PATH lookups.
mkdir -p "$T/path"
ln -s "$CAIRNFS" "$T/path/cairnfs"

step "mount -t fuse '/path/cairnfs#STORE#REF' MP -o ro,cache_dir=DIR"
run_timeout 60 mount -t fuse "$CAIRNFS#$STORE#$REF" "$MP" -o "ro,cache_dir=$T/cache" ||
        fail "mount(8) failed"
is_mounted "$MP" || fail "mount(8) returned 0 but $MP is not mounted"
[[ "$(mount_fstype "$MP")" == fuse.cairnfs ]] || fail "fstype is '$(mount_fstype "$MP")'"
track_mount "$MP"
py compare "$SRC" "$MP"
umount_volume "$MP" umount

step "an fstab line (mount -T with a private fstab)"
printf '# cairn test fstab\n%s %s fuse ro,cache_dir=%s 0 0\n' \
        "$CAIRNFS#$STORE#$REF" "$MP" "$T/cache" >"$T/fstab"
run_timeout 60 mount -T "$T/fstab" "$MP" || fail "mount -T fstab $MP failed"
track_mount "$MP"
py compare "$SRC" "$MP"
umount_volume "$MP" umount

step "mount.fuse3 as mount(8) runs it for -t fuse.cairnfs, file:// store, digest ref"
PATH=$T/path:$PATH run_timeout 60 mount.fuse3 "file://$STORE#test/fstab@$digest" "$MP" \
        -o "ro,cache_dir=$T/cache" -t fuse.cairnfs || fail "mount.fuse3 -t fuse.cairnfs failed"
track_mount "$MP"
py compare "$SRC" "$MP"
umount_volume "$MP"

step "cairnfs run directly"
run_timeout 60 "$CAIRNFS" "$STORE#$REF" "$MP" -o "cache_dir=$T/cache" ||
        fail "cairnfs STORE#REF MP failed"
is_mounted "$MP" || fail "cairnfs returned but $MP is not mounted"
track_mount "$MP"
cmp "$SRC/weights.bin" "$MP/weights.bin" || fail "weights.bin differs"
umount_volume "$MP" fusermount3 -u

step "bad sources fail cleanly"
expect_failure "mount(8) of an unknown tag" \
        mount -t fuse "$CAIRNFS#$STORE#test/fstab:nope" "$MP" -o "ro,cache_dir=$T/cache"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after a failed mount"; }
expect_failure "cairnfs with a source without '#'" "$CAIRNFS" "$STORE" "$MP" -o "cache_dir=$T/cache"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after a failed mount"; }
expect_failure "cairnfs with a missing store" \
        "$CAIRNFS" "$T/nowhere#$REF" "$MP" -o "cache_dir=$T/cache"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after a failed mount"; }
expect_failure "cairnfs with a memory_limit below the minimum" \
        "$CAIRNFS" "$STORE#$REF" "$MP" -o "cache_dir=$T/cache,memory_limit=16M"
grep -q "memory_limit '16M' is too small: at least 64M" "$T/last.err" ||
        fail "no clear error for memory_limit=16M: $(cat "$T/last.err")"
! is_mounted "$MP" || { track_mount "$MP"; fail "$MP is mounted after a failed mount"; }

step "mount -t fuse.cairnfs and an fstab line, cairnfs 'installed' (private mount namespace)"
if ! unshare -m --propagation private true 2>/dev/null; then
        log "warning: no private mount namespace here (unshare -m failed); form not tested"
        exit 0
fi
rc=0
# shellcheck disable=SC2016 # the script expands its variables itself, in the namespace
STORE=$STORE REF=$REF MP=$MP CACHE=$T/cache SRC=$SRC BINDIR=$T/path HELPER=$HELPER \
        run_timeout 120 unshare -m --propagation private bash -euc '
        for dir in /usr/local/sbin /usr/local/bin /usr/sbin; do
                [[ -d $dir ]] && break
        done
        mount --bind "$BINDIR" "$dir"
        trap "umount \"$MP\" 2>/dev/null || true" EXIT
        mount -t fuse.cairnfs "$STORE#$REF" "$MP" -o "ro,cache_dir=$CACHE"
        grep -q " $MP fuse.cairnfs " /proc/self/mounts
        python3 "$HELPER" compare "$SRC" "$MP"
        umount "$MP"
        printf "%s %s fuse.cairnfs ro,cache_dir=%s 0 0\n" "$STORE#$REF" "$MP" "$CACHE" >"$MP.fstab"
        mount -T "$MP.fstab" "$MP"
        python3 "$HELPER" compare "$SRC" "$MP"
        umount "$MP"
        ' || rc=$?
# The namespace's daemons must be gone once their mounts are.
for ((i = 0; i < 300; i++)); do
        [[ -z "$(_daemon_pid "$MP")" ]] && break
        sleep 0.1
done
pid=$(_daemon_pid "$MP")
if [[ -n "$pid" ]]; then
        kill -KILL "$pid"
        fail "cairnfs (pid $pid) outlived its mount in the private namespace"
fi
check_sanitizer_logs
((rc == 0)) || fail "mount -t fuse.cairnfs with cairnfs in the default PATH failed ($rc)"
