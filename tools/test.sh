#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test with ctest. The exit status is the tests'.
#
#   tools/test.sh              the whole suite (RelWithDebInfo, build/test)
#   tools/test.sh --sanitize   the whole suite built with ASan + UBSan (build/asan); any report fails
#   tools/test.sh --release    the whole suite built as a user builds it (Release, build/release-tests)
#   tools/test.sh --lint       clang-tidy over src/ with .clang-tidy; any finding fails
#   tools/test.sh --fuzz [S]   every libFuzzer target for S seconds (default 20), regressions first
#   tools/test.sh --package    build the .deb, lintian, install it (root), check it, purge it
# Extra arguments after the mode go to ctest (e.g. -R proxy). Tests labelled `long` (full-size
# runs) are left out; run them with `cd build/test && ctest -L long`.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
  --sanitize | --release | --lint | --fuzz | --package) shift ;;
  *) mode="" ;;
esac
# Each mode installs what it uses: the clang toolchain only for --lint and --fuzz.
case "$mode" in
  --lint) tools/deps.sh test lint ;;
  --fuzz) ;; # tools/fuzz.sh installs its own
  --package) tools/deps.sh test package ;;
  *) tools/deps.sh test ;;
esac

case "$mode" in
  --fuzz)
    exec tools/fuzz.sh "${1:-20}"
    ;;
  --package)
    exec tools/test_package.sh
    ;;
  --lint)
    tools/build.sh >/dev/null
    files=$(git ls-files 'src/*.cpp')
    # One clang-tidy per file, two at a time (2 cores); the config is .clang-tidy.
    echo "$files" | xargs -P 2 -n 1 clang-tidy -p build/test --quiet 2>/dev/null | tee build/test/clang-tidy.log
    if grep -qE "(warning|error):" build/test/clang-tidy.log; then
      echo "clang-tidy: findings above" >&2
      exit 1
    fi
    echo "clang-tidy: clean ($(echo "$files" | wc -l) files)"
    exit 0
    ;;
  --sanitize)
    build=build/asan
    (
      exec 9>/tmp/spliced-build.lock
      flock 9
      cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSPLICED_SANITIZE=ON -DSPLICED_WERROR=ON >/dev/null
      cmake --build "$build"
    )
    export SPLICED_SANITIZED=1  # the e2e tier skips its RSS checks (ASan grows RSS by design)
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=66:detect_stack_use_after_return=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=67"
    cd "$build"
    ctest --output-on-failure --timeout 600 -j2 -LE long "$@"
    ;;
  --release)
    # Release (-O3) inlines more and GCC warns differently there: warnings are errors here too.
    build=build/release-tests
    (
      exec 9>/tmp/spliced-build.lock
      flock 9
      cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPLICED_WERROR=ON >/dev/null
      cmake --build "$build"
    )
    cd "$build"
    ctest --output-on-failure --timeout 300 -j2 -LE long "$@"
    ;;
  *)
    tools/build.sh
    cd build/test
    ctest --output-on-failure --timeout 300 -j2 -LE long "$@"
    ;;
esac
