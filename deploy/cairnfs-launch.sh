#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Installed as /usr/local/bin/cairnfs in the container image, next to
# cairn-csi and cairn, which run "the cairnfs next to them": it decides
# where a volume's daemon runs.  Same arguments, same exit status, same
# one-line error on stderr as cairnfs itself (exit 0 = mounted).
#
# Modes, from /etc/cairn/cairnfs-launch.conf (KEY=VALUE lines; the path can
# be changed with CAIRNFS_LAUNCH_CONF; no file means mode=direct):
#
#   direct  exec the image's cairnfs: the daemon lives in this container and
#           dies with it.  Fine for `cairn mount` in a container, and for
#           running the plugin outside Kubernetes.
#   bundle  exec the cairnfs of the bundle (bundle=DIR, see deploy/bundle.sh)
#           through the bundle's own loader and libraries.
#   host    the CSI DaemonSet's mode: start the bundle's cairnfs as a
#           transient systemd unit of the node, through
#           `nsenter --target 1 --mount` (the pod has hostPID) and the node's
#           systemd-run.  The daemon is then a child of the node's systemd, in
#           its own cgroup (slice=, default cairn.slice), so a restart, crash
#           or upgrade of the plugin's container leaves it running and the
#           volume readable.  The unit is Type=forking: cairnfs's parent exits
#           once the mount is ready, which is when systemd-run returns; its
#           stderr goes to a file under rundir= (a path that must be the same
#           on the node and in the container) and is replayed on our stderr
#           when the start fails, so the caller still gets cairnfs's reason.
#           memory_max= (e.g. 2G), when set, becomes the unit's MemoryMax.
#
# Environment: only non-secret AWS configuration variables are passed on to
# a host daemon (as systemd-run --setenv, which is visible in its command
# line); if AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN is
# set, host mode refuses to run rather than expose them.  Credentials reach
# the daemon through a file named by AWS_SHARED_CREDENTIALS_FILE.
set -euo pipefail

# cairn-csi runs its children with an environment of its own making (the
# credentials file paths, nothing else), so the search path is set here.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

conf_file=${CAIRNFS_LAUNCH_CONF:-/etc/cairn/cairnfs-launch.conf}
image_cairnfs=${CAIRNFS_IMAGE_BINARY:-/opt/cairn/bundle/bin/cairnfs}

die() {
        echo "cairnfs: $*" >&2
        exit 1
}

mode=direct bundle="" rundir="" slice=cairn.slice memory_max=""
if [[ -e "$conf_file" ]]; then
        while IFS= read -r line || [[ -n "$line" ]]; do
                line=${line%%#*}
                [[ "$line" =~ ^[[:space:]]*$ ]] && continue
                [[ "$line" == *=* ]] || die "launch configuration '$conf_file': '$line' is not KEY=VALUE"
                key=${line%%=*} value=${line#*=}
                key=${key//[[:space:]]/} value=${value#"${value%%[![:space:]]*}"}
                value=${value%"${value##*[![:space:]]}"}
                case $key in
                mode | bundle | rundir | slice | memory_max) printf -v "$key" '%s' "$value" ;;
                *) die "launch configuration '$conf_file': unknown key '$key'" ;;
                esac
        done <"$conf_file"
fi

# The loader command line of the bundle, resolved to its versioned directory
# so that a running daemon keeps naming the version it was started from.
bundle_cmd() {
        local dir loader
        [[ -n "$bundle" ]] || die "launch configuration: mode=$mode needs bundle=DIR"
        dir=$(readlink -f -- "$bundle") || die "cannot resolve bundle '$bundle'"
        loader=$(cat "$dir/loader" 2>/dev/null) || die "'$dir' is not a cairnfs bundle"
        [[ "$loader" =~ ^[A-Za-z0-9._+-]+$ ]] || die "'$dir/loader' is malformed"
        CMD=("$dir/lib/$loader" --library-path "$dir/lib" "$dir/bin/cairnfs")
}

case $mode in
direct)
        exec "$image_cairnfs" "$@"
        ;;
bundle)
        bundle_cmd
        exec "${CMD[@]}" "$@"
        ;;
host) ;;
*)
        die "launch configuration '$conf_file': unknown mode '$mode'"
        ;;
esac

# ---------------------------------------------------------------- host mode

# --help and --version need no daemon.
for a in "$@"; do
        case $a in
        -h | --help | -V | --version)
                bundle_cmd
                exec "${CMD[@]}" "$@"
                ;;
        esac
done

for v in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
        [[ -z "${!v:-}" ]] ||
                die "refusing to start a host daemon with $v in the environment: pass credentials in a file"
done
[[ -n "$rundir" && "$rundir" == /* ]] || die "launch configuration: mode=host needs rundir=/ABSOLUTE/DIR"
bundle_cmd

# The mountpoint (cairnfs SOURCE MOUNTPOINT [-o OPTS] [-f] [-d] [-s]) names
# the unit; a random suffix keeps a relaunch from colliding with a unit
# systemd has not collected yet.
positional=()
skip=0
for a in "$@"; do
        if ((skip)); then
                skip=0
                continue
        fi
        case $a in
        -o) skip=1 ;;
        -*) ;;
        *) positional+=("$a") ;;
        esac
done
((${#positional[@]} >= 2)) || die "usage: cairnfs STORE#REF MOUNTPOINT [-o OPTION[,OPTION...]]"
mountpoint=${positional[1]}
id=$(printf '%s' "$mountpoint" | sha256sum | cut -c1-16)
unit="cairnfs-$id-$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"

mkdir -p "$rundir"
chmod 0700 "$rundir"
errfile="$rundir/$unit.err"
: >"$errfile"
trap 'rm -f "$errfile" "$errfile.launch"' EXIT

# TimeoutStartSec stays below cairn-csi's own limit for a mount (100 s), so
# that systemd gives up on a start before the plugin gives up on us.
props=(
        --property=Type=forking
        --property=TimeoutStartSec=90
        --property="StandardError=file:$errfile"
        --property=StandardOutput=null
        --slice="$slice"
)
[[ -z "$memory_max" ]] || props+=(--property="MemoryMax=$memory_max")
for v in AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION \
        AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3; do
        [[ -z "${!v:-}" ]] || props+=(--setenv="$v=${!v}")
done

rc=0
nsenter --target 1 --mount -- systemd-run --quiet --collect --unit="$unit" \
        --description="cairn volume at $mountpoint" "${props[@]}" -- "${CMD[@]}" "$@" \
        2>"$errfile.launch" || rc=$?
if ((rc != 0)); then
        # cairnfs's own one-line reason, else systemd's.
        if [[ -s "$errfile" ]]; then
                cat "$errfile" >&2
        else
                cat "$errfile.launch" >&2
                echo "cairnfs: the daemon for '$mountpoint' did not start (unit $unit.service)" >&2
        fi
        rm -f "$errfile.launch"
        exit 1
fi
rm -f "$errfile.launch"
exit 0
