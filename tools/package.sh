#!/usr/bin/env bash
# Builds the Debian package: build/package/spliced_VERSION_ARCH.deb (a Release build of its own in
# build/package, so the test tree is untouched), then checks it with lintian when it is installed.
#
#   tools/package.sh            build the .deb and print its path
#   tools/package.sh --lint     also run lintian (any error fails)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/package
(
  exec 9>/tmp/spliced-build.lock
  flock 9
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPLICED_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_SYSCONFDIR=/etc \
    -DSPLICED_SYSTEMD_UNIT_DIR=/lib/systemd/system \
    -DSPLICED_SYSUSERS_DIR=/usr/lib/sysusers.d >/dev/null
  cmake --build "$build" >/dev/null
  (cd "$build" && cpack -G DEB >/dev/null)
)
deb=$(ls -t "$build"/package/spliced_*.deb | head -n 1)
if [ "${1:-}" = "--lint" ]; then
  # Errors fail; warnings and notes are shown.
  lintian --fail-on error --tag-display-limit 0 "$deb"
fi
echo "$deb"
