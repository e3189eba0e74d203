#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds cairn and runs every test: the one command CI runs (.ci/run) and
# the second command of the README's Quick start.
#
#   1. dependencies (scripts/deps.sh: a no-op when all are installed);
#   2. build/: the optimized build; ctest runs the cmocka unit tests, the
#      fuzz corpora replayed as ordinary tests, and the integration tests
#      (real FUSE mounts);
#   3. build-asan/: the same build with ASan+UBSan (clang when installed)
#      and the same ctest run, with every sanitizer finding fatal (the
#      integration tests collect the reports of the daemonized cairnfs,
#      whose stderr is gone);
#   4. build-fuzz/ (when clang is there): the libFuzzer targets, each run for
#      a bounded time (CAIRN_FUZZ_SECONDS, default 30) from its corpus.
#
# Every stage runs even when an earlier one failed, so one run shows all
# failures.  The last line is "N passed, N failed" (plus ", N skipped" when
# a suite was skipped), counting test suites; the exit status is non-zero
# when anything failed.
#
# Environment: CAIRN_BUILD_DIR (default build; the others are
# <dir>-asan and <dir>-fuzz), CAIRN_JOBS (default: CPUs), CAIRN_FUZZ_SECONDS,
# CAIRN_SKIP_ASAN=1 / CAIRN_SKIP_FUZZ=1 to leave a stage out when iterating.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD=${CAIRN_BUILD_DIR:-build}
ASAN_BUILD=$BUILD-asan
FUZZ_BUILD=$BUILD-fuzz
JOBS=${CAIRN_JOBS:-$(nproc)}
FUZZ_SECONDS=${CAIRN_FUZZ_SECONDS:-30}
START=$(date +%s)

passed=0
failed=0
skipped=0
results=()

section() { printf '\n==== %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }
result() { # STATUS NAME [NOTE]
        results+=("$(printf '%-7s %s%s' "$1" "$2" "${3:+  ($3)}")")
        case $1 in
        PASS) passed=$((passed + 1)) ;;
        SKIP) skipped=$((skipped + 1)) ;;
        *) failed=$((failed + 1)) ;;
        esac
}

# build DIR CMAKE_ARGS... [-- TARGETS...]: configure and build (everything,
# or only TARGETS); the log is shown on failure.
build() {
        local dir=$1 rc=0 args=() targets=()
        shift
        while (($#)) && [[ "$1" != -- ]]; do
                args+=("$1")
                shift
        done
        if (($#)); then
                shift
                targets=(--target "$@")
        fi
        mkdir -p "$dir"
        {
                cmake -S . -B "$dir" "${args[@]}" &&
                        cmake --build "$dir" -j "$JOBS" "${targets[@]}"
        } >"$dir/build.log" 2>&1 || rc=$?
        if ((rc != 0)); then
                tail -n 60 "$dir/build.log"
                echo "build of $dir failed; full log: $dir/build.log"
                result FAIL "build $dir"
                return 1
        fi
        echo "built $dir"
}

# run_ctest DIR [ENV=VALUE...]: every ctest test of DIR is one suite.
run_ctest() {
        local dir=$1 rc=0 log line name status
        shift
        log=$ROOT/$dir/ctest.log
        (cd "$dir" && env "$@" ctest --output-on-failure -j "$JOBS" --timeout 900) 2>&1 |
                tee "$log" || rc=$?
        # "  3/12 Test  #3: unit/test_chunker ....   Passed    0.10 sec"
        local seen=0
        while IFS= read -r line; do
                [[ "$line" =~ Test[[:space:]]+\#[0-9]+:[[:space:]]+([^[:space:]]+)[[:space:].]+(\*\*\*)?([A-Za-z]+) ]] ||
                        continue
                name=${BASH_REMATCH[1]}
                status=${BASH_REMATCH[3]}
                seen=$((seen + 1))
                case $status in
                Passed) result PASS "$dir: $name" ;;
                Skipped) result SKIP "$dir: $name" ;;
                *) result FAIL "$dir: $name" "$status" ;;
                esac
        done <"$log"
        if ((seen == 0)); then
                result FAIL "$dir: ctest" "no test ran"
        elif ((rc != 0)) && ! grep -q 'tests failed out of' "$log"; then
                result FAIL "$dir: ctest" "exited with $rc"
        fi
}

# Mounts a killed test may have left behind under a build's scratch dir.
stale_mounts() {
        local _a _b _c _d mp _rest
        while read -r _a _b _c _d mp _rest; do
                mp=$(printf '%b' "$mp")
                case $mp in "$ROOT/$BUILD"*/scratch/*) echo "$mp" ;; esac
        done </proc/self/mountinfo
}

section "dependencies"
bash scripts/deps.sh

section "build: $BUILD (RelWithDebInfo)"
if build "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
        section "tests: $BUILD"
        run_ctest "$BUILD"
fi

if [[ "${CAIRN_SKIP_ASAN:-0}" != 1 ]]; then
        section "build: $ASAN_BUILD (ASan+UBSan)"
        # clang where it is there: GCC 12's UBSan ignores log_path, and the
        # daemonized cairnfs has no stderr, so its reports would be lost.
        cc=$(command -v clang || command -v cc)
        if build "$ASAN_BUILD" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
                -DCMAKE_C_FLAGS=-O1 -DCAIRN_SANITIZE=ON; then
                section "tests: $ASAN_BUILD"
                run_ctest "$ASAN_BUILD" \
                        ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1 \
                        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                        LSAN_OPTIONS=report_objects=1
        fi
fi

if [[ "${CAIRN_SKIP_FUZZ:-0}" != 1 ]]; then
        section "fuzz: $FUZZ_BUILD (libFuzzer, ${FUZZ_SECONDS}s per target)"
        targets=()
        for src in tests/fuzz/fuzz_*.c; do
                [[ -e "$src" ]] && targets+=("$(basename "$src" .c)")
        done
        if ! command -v clang >/dev/null; then
                echo "clang is not installed: no libFuzzer run (the corpora were replayed above)"
                result SKIP "fuzz" "no clang"
        elif ((${#targets[@]} == 0)); then
                echo "no fuzz targets in tests/fuzz/"
        elif build "$FUZZ_BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
                -DCAIRN_FUZZ=ON -DCAIRN_SANITIZE=ON -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link \
                -- "${targets[@]}"; then
                for t in "${targets[@]}"; do
                        parser=${t#fuzz_}
                        work=$FUZZ_BUILD/corpus-work/$parser
                        artifacts=$FUZZ_BUILD/artifacts/$parser
                        mkdir -p "$work" "$artifacts"
                        rc=0
                        # New inputs go to the work dir; the checked-in corpus is only read.
                        "$FUZZ_BUILD/fuzz/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
                                -rss_limit_mb=2048 -print_final_stats=1 \
                                -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$parser" \
                                >"$FUZZ_BUILD/$t.log" 2>&1 || rc=$?
                        if ((rc == 0)); then
                                echo "$t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' \
                                        "$FUZZ_BUILD/$t.log" | grep -o '[0-9]*$') runs, no failure"
                                result PASS "fuzz: $t"
                        else
                                tail -n 60 "$FUZZ_BUILD/$t.log"
                                echo "$t failed ($rc); reproducer(s) in $artifacts/:"
                                ls -l "$artifacts" || true
                                result FAIL "fuzz: $t" "exit $rc"
                        fi
                done
        fi
fi

section "checks"
stale=$(stale_mounts)
if [[ -n "$stale" ]]; then
        echo "mounts left behind by the tests:"
        echo "$stale"
        result FAIL "no mount left behind"
        while read -r mp; do umount -l "$mp" 2>/dev/null || true; done <<<"$stale"
fi

section "summary"
printf '%s\n' "${results[@]}"
echo
printf '%d passed, %d failed' "$passed" "$failed"
((skipped == 0)) || printf ', %d skipped' "$skipped"
printf '\n'
((failed == 0))
