#!/usr/bin/env bash
# Builds the test tree, one build at a time on this machine (the lock serialises parallel callers).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/test
exec 9>/tmp/spliced-build.lock
flock 9
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPLICED_WERROR=ON >/dev/null
cmake --build "$build" "$@"
