#!/usr/bin/env bash
# Installs what is missing, builds (Release with tests), and runs every test with ctest.
# The exit status is the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
build=build/test
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build"
cd "$build"
ctest --output-on-failure --timeout 300 -j2 "$@"
