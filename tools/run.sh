#!/usr/bin/env bash
# Installs what is missing, builds Release, and runs spliced in the foreground with
# conf/spliced.yaml (or the config given as the first argument). Ctrl-C drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPLICED_TESTS=OFF >/dev/null
cmake --build build/release --target spliced
config="${1:-conf/spliced.yaml}"
exec build/release/spliced -c "$config"
