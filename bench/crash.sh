#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Crash-safety figure: 50 rounds (CAIRN_CRASH_ROUNDS) of kill -9 of
# `cairn warm` or cairnfs at a random moment while they fetch from nginx,
# each followed by a remount over the same cache and a full compared read
# (tests/integration/test_crash.sh does the work; this runs it long and
# prints the summary line).  Usage: bench/crash.sh [--build-dir DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$repo/build
[[ ${1:-} == --build-dir ]] && build_dir=$2
export CAIRN_CRASH_ROUNDS=${CAIRN_CRASH_ROUNDS:-50}
export CAIRN_BIN=$build_dir/bin CAIRN_TESTS_SRC=$repo/tests CAIRN_SCRATCH=$build_dir/scratch-bench
bash "$repo/tests/integration/test_crash.sh" 2>&1 | tee "$build_dir/crash-bench.log" |
        grep -E "rounds:|PASS|FAIL|fail" || true
grep -q "PASS" "$build_dir/crash-bench.log"
