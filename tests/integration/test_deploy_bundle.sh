#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The pieces of the Kubernetes deployment that run cairnfs on a node,
# outside the plugin's container (docs/KUBERNETES.md):
#
# - deploy/bundle.sh make: cairnfs with all its libraries and their loader;
#   a volume mounted from the bundle is compared byte for byte with its
#   source, and every shared object the daemon maps comes from the bundle
#   (none from the system), so the bundle runs on any node distribution;
# - deploy/bundle.sh install: versioned directories, an atomic `current`
#   link, idempotent; a version that a running daemon was started from is
#   kept, and removed once no daemon uses it;
# - deploy/cairnfs-launch.sh (the image's /usr/local/bin/cairnfs): its
#   bundle and direct modes mount for real; host mode refuses credentials
#   in the environment, and either starts a real transient systemd unit
#   (where PID 1 is systemd) or fails cleanly with cairnfs's exit status 1.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_fuse

REPO=$(cd "$CAIRN_TESTS_SRC/.." && pwd)
BUNDLE=$REPO/deploy/bundle.sh
LAUNCH=$REPO/deploy/cairnfs-launch.sh
STORE=$T/store
REF=test/bundle:v1
CONF=$T/launch.conf

# The pid of the daemon serving mountpoint $1 (started through the loader,
# so its executable is the bundle's ld.so, not cairnfs).
daemon_of() {
        local p argv
        for p in /proc/[0-9]*; do
                # A process may exit between the glob and the read.
                argv=$({ tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null) || continue
                if grep -qxF -- "$1" <<<"$argv" && grep -q 'cairnfs$' <<<"$argv"; then
                        echo "${p#/proc/}"
                        return 0
                fi
        done
        return 1
}

# unmount_and_wait MOUNTPOINT PID
unmount_and_wait() {
        local i
        run_timeout 60 fusermount3 -u "$1" || fail "unmounting $1 failed"
        for ((i = 0; i < 300; i++)); do
                kill -0 "$2" 2>/dev/null || return 0
                sleep 0.1
        done
        fail "the daemon (pid $2) of $1 did not exit after the unmount"
}

step "a volume to mount"
py gentree "$T/src" --profile demo --seed 5
build_volume "$T/src" "$STORE" "$REF" >/dev/null

step "bundle.sh make"
run_timeout 120 bash "$BUNDLE" make "$CAIRN_BIN/cairnfs" "$T/bundle" || fail "bundle.sh make failed"
loader=$(cat "$T/bundle/loader")
[[ -x "$T/bundle/lib/$loader" && -x "$T/bundle/bin/cairnfs" ]] || fail "the bundle lacks its loader or cairnfs"
for lib in libc.so.6 libfuse3.so.3; do
        [[ -f "$T/bundle/lib/$lib" ]] || fail "the bundle lacks $lib"
done
expect_failure "bundle.sh make into an existing directory" bash "$BUNDLE" make "$CAIRN_BIN/cairnfs" "$T/bundle"
expect_in_stderr "bundle.sh make into an existing directory" "already exists"

step "bundle.sh install: versioned, atomic, idempotent"
run_timeout 60 bash "$BUNDLE" install "$T/bundle" "$T/node" || fail "bundle.sh install failed"
v1=$(readlink "$T/node/current")
[[ -d "$T/node/$v1" ]] || fail "current points at '$v1', which is not a directory"
run_timeout 60 bash "$BUNDLE" install "$T/bundle" "$T/node" || fail "a second install failed"
[[ "$(readlink "$T/node/current")" == "$v1" ]] || fail "a second install of the same bundle changed current"
(($(find "$T/node" -mindepth 1 -maxdepth 1 | wc -l) == 2)) || fail "a second install left more than one version"

step "launcher, bundle mode: a real mount served by the bundle alone"
printf 'mode=bundle\nbundle=%s\n' "$T/node/current" >"$CONF"
mkdir -p "$T/mnt"
# In a sanitizer build, LeakSanitizer counts the dynamic loader's own
# allocations as leaks when ld.so is run as a program (as the bundle is
# started): leak checking is off for this one daemon only; the direct-mode
# daemon below keeps it.
CAIRNFS_LAUNCH_CONF=$CONF ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        run_timeout 60 env -u LD_LIBRARY_PATH -u LD_PRELOAD bash "$LAUNCH" \
        "$STORE#$REF" "$T/mnt" -o "cache_dir=$T/cache" 2>"$T/launch.err" || {
        cat "$T/launch.err" >&2
        fail "the launcher (bundle mode) did not mount"
}
[[ "$(mount_fstype "$T/mnt")" == fuse.cairnfs ]] || fail "$T/mnt is not a cairnfs mount"
pid=$(daemon_of "$T/mnt") || fail "no daemon serves $T/mnt"
first_arg=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
[[ "$first_arg" == "$T/node/$v1/lib/$loader" ]] ||
        fail "the daemon was started as '$first_arg', not from the versioned bundle directory"
run_timeout 300 python3 "$HELPER" compare "$T/src" "$T/mnt" || fail "the bundle's mount differs from the source"
foreign=$(awk '$6 ~ /\.so/ {print $6}' "/proc/$pid/maps" | sort -u | grep -vF "$T/node/$v1/lib/" || true)
grep -qF "$T/node/$v1/lib/libc.so.6" "/proc/$pid/maps" || fail "the daemon does not map the bundle's libc"
[[ -z "$foreign" ]] || fail "the daemon maps shared objects from outside the bundle: $foreign"
log "ok: daemon $pid maps only the bundle's libraries"

step "bundle.sh install of a new version keeps the one a daemon runs from"
cp -a "$T/bundle" "$T/bundle2"
echo "second version" >"$T/bundle2/VERSION"
run_timeout 60 bash "$BUNDLE" install "$T/bundle2" "$T/node" 2>"$T/install2.err" || {
        cat "$T/install2.err" >&2
        fail "installing a second version failed"
}
v2=$(readlink "$T/node/current")
[[ "$v2" != "$v1" && -d "$T/node/$v2" ]] || fail "current does not point at the new version"
[[ -d "$T/node/$v1" ]] || fail "the version a running daemon uses was removed"
grep -qF "keeping $T/node/$v1" "$T/install2.err" || fail "install did not say it keeps $v1"
ls "$T/mnt" >/dev/null || fail "the mount stopped answering during the install"
unmount_and_wait "$T/mnt" "$pid"
run_timeout 60 bash "$BUNDLE" install "$T/bundle2" "$T/node" 2>"$T/install3.err" || fail "re-install failed"
[[ ! -e "$T/node/$v1" ]] || fail "the unused version $v1 was not removed"
[[ "$(readlink "$T/node/current")" == "$v2" ]] || fail "current moved"

step "launcher, direct mode"
printf 'mode=direct\n' >"$CONF"
CAIRNFS_LAUNCH_CONF=$CONF CAIRNFS_IMAGE_BINARY=$CAIRN_BIN/cairnfs run_timeout 60 bash "$LAUNCH" \
        "$STORE#$REF" "$T/mnt" -o "cache_dir=$T/cache" || fail "the launcher (direct mode) did not mount"
[[ "$(mount_fstype "$T/mnt")" == fuse.cairnfs ]] || fail "direct mode: $T/mnt is not a cairnfs mount"
pid=$(daemon_of "$T/mnt") || fail "no daemon serves $T/mnt"
run_timeout 300 python3 "$HELPER" compare "$T/src" "$T/mnt" || fail "direct mode: the mount differs"
unmount_and_wait "$T/mnt" "$pid"
expect_failure "the launcher with a bad store" env CAIRNFS_LAUNCH_CONF="$CONF" \
        CAIRNFS_IMAGE_BINARY="$CAIRN_BIN/cairnfs" bash "$LAUNCH" "$T/nowhere#$REF" "$T/mnt"
expect_one_line_error "the launcher passes cairnfs's one-line error through"

step "launcher, host mode"
printf 'mode=host\nbundle=%s\nrundir=%s\n' "$T/node/current" "$T/run" >"$CONF"
expect_failure "host mode with a secret in the environment" env CAIRNFS_LAUNCH_CONF="$CONF" \
        AWS_SECRET_ACCESS_KEY=e2e-not-a-secret bash "$LAUNCH" "$STORE#$REF" "$T/mnt"
expect_in_stderr "host mode with a secret in the environment" "refusing to start a host daemon"
grep -qF e2e-not-a-secret "$T/last.err" && fail "the refusal quotes the secret"
CAIRNFS_LAUNCH_CONF=$CONF run_timeout 30 bash "$LAUNCH" --version >/dev/null ||
        fail "host mode: --version did not run the bundle"
if [[ "$(cat /proc/1/comm)" == systemd ]] && command -v systemd-run >/dev/null; then
        log "PID 1 is systemd: a real transient unit"
        CAIRNFS_LAUNCH_CONF=$CONF run_timeout 200 bash "$LAUNCH" "$STORE#$REF" "$T/mnt" \
                -o "cache_dir=$T/cache" 2>"$T/host.err" || {
                cat "$T/host.err" >&2
                fail "host mode did not mount"
        }
        pid=$(daemon_of "$T/mnt") || fail "host mode: no daemon serves $T/mnt"
        grep -q '^0::/.*cairn.slice/cairnfs-' "/proc/$pid/cgroup" ||
                fail "host mode: the daemon is not in a cairnfs unit of cairn.slice: $(cat "/proc/$pid/cgroup")"
        run_timeout 300 python3 "$HELPER" compare "$T/src" "$T/mnt" || fail "host mode: the mount differs"
        unmount_and_wait "$T/mnt" "$pid"
        expect_failure "host mode with a bad store" env CAIRNFS_LAUNCH_CONF="$CONF" \
                bash "$LAUNCH" "$T/nowhere#$REF" "$T/mnt"
        expect_in_stderr "host mode passes cairnfs's error through" "cannot open"
else
        log "PID 1 is '$(cat /proc/1/comm)', not systemd: host mode must fail cleanly"
        expect_failure "host mode without systemd" env CAIRNFS_LAUNCH_CONF="$CONF" \
                bash "$LAUNCH" "$STORE#$REF" "$T/mnt" -o "cache_dir=$T/cache"
        expect_in_stderr "host mode without systemd" "did not start"
        ! is_mounted "$T/mnt" || fail "a failed host-mode launch left a mount"
        [[ -z "$(ls -A "$T/run")" ]] || fail "a failed host-mode launch left files in the run directory"
fi
