#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The cairnfs bundle: the cairnfs binary with every shared library it loads,
# glibc and its dynamic loader included, so that it runs on a Kubernetes
# node whatever the node's distribution has installed.  The CSI plugin runs
# in a container, but the daemons that serve its volumes must outlive that
# container (a restart of a container kills all of its processes), so they
# run on the node itself as transient systemd units (deploy/cairnfs-launch.sh,
# docs/KUBERNETES.md), started from a copy of this bundle on the node.
#
#   bundle.sh make CAIRNFS OUT_DIR
#       At image build time: copies CAIRNFS to OUT_DIR/bin/, the libraries
#       that `ldd` resolves for it to OUT_DIR/lib/, writes the loader's
#       file name to OUT_DIR/loader, and checks that the bundle runs on its
#       own (no system library path) with --version.
#
#   bundle.sh install BUNDLE_DIR DEST_ROOT
#       In the DaemonSet's init container: copies BUNDLE_DIR to
#       DEST_ROOT/<content hash>/ unless it is there already, points
#       DEST_ROOT/current at it (atomic rename), and removes the other
#       versions that no running process was started from (a daemon's
#       command line names the loader of its version; /proc/*/cmdline is
#       readable for every process with hostPID).  Safe to run concurrently
#       with running daemons and with itself.
#
#   bundle.sh run BUNDLE_DIR [CAIRNFS ARGS...]
#       Runs the bundle's cairnfs through its own loader and libraries.
#
# Exit status: 0 success, 1 failure (reason on stderr), 2 usage error.
set -euo pipefail

prog=bundle.sh

die() {
        echo "$prog: $*" >&2
        exit 1
}

usage() {
        cat <<'EOF'
usage: bundle.sh make CAIRNFS OUT_DIR
       bundle.sh install BUNDLE_DIR DEST_ROOT
       bundle.sh run BUNDLE_DIR [CAIRNFS ARGS...]

Builds, installs or runs the self-contained cairnfs bundle (cairnfs, its
shared libraries and their dynamic loader) that the CSI plugin's daemons
run from on a node.  See docs/KUBERNETES.md.
EOF
}

# The loader command line of a bundle: LOADER --library-path LIB BIN.
bundle_cmd() {
        local dir=$1 loader
        loader=$(cat "$dir/loader") || die "'$dir' is not a bundle (no loader file)"
        [[ "$loader" =~ ^[A-Za-z0-9._+-]+$ ]] || die "'$dir/loader' is malformed"
        BUNDLE_CMD=("$dir/lib/$loader" --library-path "$dir/lib" "$dir/bin/cairnfs")
}

cmd_make() {
        local bin=$1 out=$2 line lib loader="" n=0
        [[ -x "$bin" ]] || die "'$bin' is not an executable"
        [[ ! -e "$out" ]] || die "'$out' already exists"
        mkdir -p "$out/bin" "$out/lib"
        install -m 0755 "$bin" "$out/bin/cairnfs"
        # ldd prints "libx.so.1 => /path (0x...)" for each library and the
        # loader as "/lib64/ld-linux-x86-64.so.2 (0x...)".
        while read -r line; do
                case $line in
                *'=> not found'*)
                        die "cairnfs needs a library that is not installed: ${line%% *}"
                        ;;
                *'=> /'*)
                        lib=${line#*=> }
                        lib=${lib%% (*}
                        ;;
                /*)
                        lib=${line%% (*}
                        loader=$(basename "$lib")
                        ;;
                *) continue ;;
                esac
                cp -L "$lib" "$out/lib/"
                n=$((n + 1))
        done < <(ldd "$bin")
        [[ -n "$loader" ]] || die "ldd named no dynamic loader for '$bin' (a static binary needs no bundle)"
        echo "$loader" >"$out/loader"
        chmod -R a+rX,go-w "$out"
        # The bundle must work without any system library: an empty
        # LD_LIBRARY_PATH and only its own directory on the search path.
        bundle_cmd "$out"
        env -u LD_LIBRARY_PATH -u LD_PRELOAD "${BUNDLE_CMD[@]}" --version >/dev/null ||
                die "the bundle in '$out' does not run"
        echo "$prog: bundled cairnfs with $n shared objects in $out (loader $loader)" >&2
}

# A content hash of a bundle: paths, modes and bytes of every file.
bundle_hash() {
        (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z |
                xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# Is any running process started from this bundle directory?
bundle_in_use() {
        local dir=$1 f
        for f in /proc/[0-9]*/cmdline; do
                # The daemon's argv[0] is DIR/lib/LOADER (bundle_cmd).
                if tr '\0' '\n' <"$f" 2>/dev/null | head -n 1 | grep -qF -- "$dir/lib/"; then
                        return 0
                fi
        done
        return 1
}

cmd_install() {
        local src=$1 root=$2 hash dest tmp old
        [[ -f "$src/loader" ]] || die "'$src' is not a bundle (no loader file)"
        mkdir -p "$root"
        hash=$(bundle_hash "$src")
        dest=$root/$hash
        if [[ ! -d "$dest" ]]; then
                tmp=$(mktemp -d "$root/.install.XXXXXX")
                cp -a "$src/." "$tmp/"
                chmod 0755 "$tmp"
                # Another installer may have won the race: keep theirs.
                mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp"
        fi
        bundle_cmd "$dest"
        "${BUNDLE_CMD[@]}" --version >/dev/null || die "the installed bundle '$dest' does not run"
        ln -sfn "$hash" "$root/.current.tmp.$$"
        mv -T "$root/.current.tmp.$$" "$root/current"
        echo "$prog: $root/current -> $hash" >&2
        for old in "$root"/*/ "$root"/.install.*/; do
                old=${old%/}
                [[ -d "$old" && ! -L "$old" && "$old" != "$dest" ]] || continue
                # A half-copied directory of a concurrent installer is recent.
                if [[ "$(basename "$old")" == .install.* ]] &&
                        [[ -n "$(find "$old" -maxdepth 0 -mmin -10)" ]]; then
                        continue
                fi
                if bundle_in_use "$old"; then
                        echo "$prog: keeping $old: a running daemon uses it" >&2
                else
                        rm -rf "$old"
                        echo "$prog: removed $old (no daemon uses it)" >&2
                fi
        done
}

cmd_run() {
        local dir=$1
        shift
        bundle_cmd "$dir"
        exec "${BUNDLE_CMD[@]}" "$@"
}

case ${1:-} in
-h | --help)
        usage
        exit 0
        ;;
make)
        (($# == 3)) || { usage >&2 && exit 2; }
        cmd_make "$2" "$3"
        ;;
install)
        (($# == 3)) || { usage >&2 && exit 2; }
        cmd_install "$2" "$3"
        ;;
run)
        (($# >= 2)) || { usage >&2 && exit 2; }
        shift
        cmd_run "$@"
        ;;
*)
        usage >&2
        exit 2
        ;;
esac
