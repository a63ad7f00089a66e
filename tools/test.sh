#!/usr/bin/env bash
# Installs what is missing, builds (Release with tests), and runs every test with ctest.
# The exit status is the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh
cd build/test
ctest --output-on-failure --timeout 300 -j2 "$@"
