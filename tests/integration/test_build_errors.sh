#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Failed builds fail loudly and change nothing.  Unreadable input (root
# reads everything, so those builds run as nobody against a mode-000 file
# and a mode-000 directory), a missing or non-directory SRC_DIR and every
# kind of invalid tag exit non-zero with a message naming the problem,
# write no ref (an existing tag keeps its digest) and leave no new file in
# the store.  Also the edges of the tag grammar that must be accepted, and
# `cairn mount` on a missing mount point.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$T/src
STORE=$T/store
NOBODY=65534
AS_NOBODY=(setpriv "--reuid=$NOBODY" "--regid=$NOBODY" --clear-groups --)

# Every file of the store, with sizes: a failed build must not change it.
store_files() { (cd "$STORE" && find . -type f -printf '%p %s\n' | sort); }

command -v setpriv >/dev/null || fail "setpriv is missing (package util-linux)"
mkdir -p "$SRC/sub" "$STORE"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$SRC/aa-data.bin"
echo hello >"$SRC/sub/hello.txt"
ln -s sub/hello.txt "$SRC/link"
chmod -R a+rX "$SRC"
# Entries come and go below; the root's mtime is put back each time so
# that the tree, and so its digest, stays the same.
touch -r "$SRC" "$T/src.stamp"
restore_src_mtime() { touch -r "$T/src.stamp" "$SRC"; }
chown -R $NOBODY:$NOBODY "$STORE"
chmod 755 "$T"
chmod 1777 "$T/sanitizer"

step "a good build as nobody"
"${AS_NOBODY[@]}" "$CAIRN" build "$SRC" --store "$STORE" --tag test/errors:v1 >"$T/out" 2>"$T/err" || {
        cat "$T/err" >&2
        fail "cairn build as nobody failed on a readable tree"
}
digest=$(tail -n 1 "$T/out")
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || fail "cairn build printed '$digest'"
ref_file=$STORE/refs/test/errors/v1
[[ -f "$ref_file" ]] || fail "no ref at refs/test/errors/v1 after a build"
cp "$ref_file" "$T/ref.before"
store_files >"$T/store.before"

check_unchanged() {
        cmp -s "$ref_file" "$T/ref.before" || fail "$1: the existing tag changed"
        [[ ! -e "$STORE/refs/test/errors/v2" ]] || fail "$1: a ref was written for a new tag"
        store_files >"$T/store.after"
        if ! cmp -s "$T/store.before" "$T/store.after"; then
                diff "$T/store.before" "$T/store.after" >&2 || true
                fail "$1: the store changed"
        fi
        run_timeout 60 "$CAIRN" inspect --store "$STORE" test/errors:v1 --json >"$T/inspect.json"
        [[ "$(py jsonget "$T/inspect.json" manifest)" == "$digest" ]] ||
                fail "$1: test/errors:v1 no longer resolves to $digest"
}

step "an unreadable file (mode 000, build as nobody)"
echo secret >"$SRC/zz-secret"
chmod 000 "$SRC/zz-secret"
for tag in test/errors:v1 test/errors:v2; do
        expect_failure "building over an unreadable file into $tag" \
                "${AS_NOBODY[@]}" "$CAIRN" build "$SRC" --store "$STORE" --tag "$tag"
        expect_in_stderr "unreadable file" zz-secret
        log "ok: $(grep -F zz-secret "$T/last.err" | head -n 1)"
        ! grep -q '^sha256:' "$T/last.out" || fail "a failed build printed a digest"
        check_unchanged "unreadable file, $tag"
done
rm -f "$SRC/zz-secret"
restore_src_mtime

step "an unreadable directory (mode 000, build as nobody)"
mkdir -p "$SRC/zz-locked/inner"
echo x >"$SRC/zz-locked/inner/x"
chmod 000 "$SRC/zz-locked"
expect_failure "building over an unreadable directory" \
        "${AS_NOBODY[@]}" "$CAIRN" build "$SRC" --store "$STORE" --tag test/errors:v1
expect_in_stderr "unreadable directory" zz-locked
check_unchanged "unreadable directory"
chmod 755 "$SRC/zz-locked"
rm -rf "$SRC/zz-locked"
restore_src_mtime

step "missing and non-directory SRC_DIR"
expect_failure "building a missing directory" \
        "$CAIRN" build "$T/no-such-dir" --store "$STORE" --tag test/errors:v2
expect_in_stderr "missing SRC_DIR" no-such-dir
expect_one_line_error "missing SRC_DIR"
check_unchanged "missing SRC_DIR"
expect_failure "building a regular file" \
        "$CAIRN" build "$SRC/aa-data.bin" --store "$STORE" --tag test/errors:v2
expect_in_stderr "SRC_DIR is a file" aa-data.bin
check_unchanged "SRC_DIR is a file"

step "invalid tags"
long_tag=$(printf 't%.0s' {1..129})
long_name=$(printf 'n%.0s' {1..256})
invalid=("Upper/case:v1" "a:" ":v1" "noseparator" "a:b:c" "a:.." "a:." "../x:v1" "a/../b:v1"
        "a/./b:v1" "/abs:v1" "a//b:v1" "a/:v1" "a:$long_tag" "$long_name:v1" "a:bad tag" "a:t/x"
        "a:ü" "-a:v1" ".a:v1" "a b:v1" "a:v1 " "a@sha256:1234:v1")
for tag in "${invalid[@]}"; do
        expect_failure "building with --tag '$tag'" \
                "$CAIRN" build "$SRC" --store "$STORE" --tag "$tag"
        expect_one_line_error "invalid tag '$tag'"
        check_unchanged "invalid tag '$tag'"
done
expect_failure "building without --tag" "$CAIRN" build "$SRC" --store "$STORE"
expect_failure "building without --store" "$CAIRN" build "$SRC" --tag test/errors:v2
check_unchanged "missing options"

step "valid edge cases of the ref grammar"
long_ok=$(printf 'T%.0s' {1..128})
for tag in "org/model:V1.0-rc_1" "my-org/my.model_x/sub-3:latest" "a:$long_ok" "0:0" "a:-v"; do
        d=$(build_volume "$SRC" "$STORE" "$tag")
        [[ "$d" == "$digest" ]] || fail "the same tree built as $tag gave $d, not $digest"
        run_timeout 60 "$CAIRN" inspect --store "$STORE" "$tag" --json >"$T/inspect.json"
        [[ "$(py jsonget "$T/inspect.json" manifest)" == "$digest" ]] ||
                fail "$tag does not resolve to $digest"
done

step "cairn mount on a missing mount point"
expect_failure "mounting on a missing directory" \
        "$CAIRN" mount --store "$STORE" test/errors:v1 "$T/no-such-mnt" --cache-dir "$T/cache"
expect_one_line_error "missing mount point"
expect_in_stderr "missing mount point" no-such-mnt
expect_failure "mounting on a regular file" \
        "$CAIRN" mount --store "$STORE" test/errors:v1 "$SRC/aa-data.bin" --cache-dir "$T/cache"
expect_one_line_error "mount point is a file"
