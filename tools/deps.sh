#!/usr/bin/env bash
# Installs the Debian packages spliced needs, only those that are missing (so it is quick when
# nothing changed). What is installed depends on what is about to run:
#
#   tools/deps.sh           build and run spliced (tools/run.sh)
#   tools/deps.sh test      + the test suite: Catch2, python3 (the layering check), rsyslog
#                           (a real sender through a restart, e2e/senders_test.cpp), htpasswd,
#                           openssl and curl (the admin endpoint's auth and TLS), rclone
#                           (a real upload tool for archive.on_publish, e2e/verify_test.cpp),
#                           chromium and chromium-driver (the status page, e2e/status_page_test),
#                           prometheus (a real scrape and promtool, e2e/prometheus_test)
#   tools/deps.sh package   + lintian, zstd (tools/test.sh --package: build, install and purge the .deb)
#   tools/deps.sh lint      + clang-tidy (tools/test.sh --lint)
#   tools/deps.sh fuzz      + clang and its libFuzzer/sanitizer runtimes (tools/fuzz.sh)
#
# Several groups may be named at once. The clang toolchain (lint, fuzz) is about 250 MB: only the
# modes that use it install it. The sanitized suite needs nothing more: GCC brings ASan and UBSan.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libevent-dev libyaml-cpp-dev libspdlog-dev
  libfmt-dev libzstd-dev zlib1g-dev libssl-dev libcrypt-dev libsystemd-dev libxxhash-dev
  netcat-openbsd)
for group in "$@"; do
  case "$group" in
    # rsyslog: e2e/senders_test.cpp, e2e/syslog_test.cpp; bsdutils (logger): e2e/syslog_test.cpp;
    # apache2-utils (htpasswd), openssl, curl: e2e/admin_auth_test.cpp; rclone: e2e/verify_test.cpp;
    # zstd, gzip: e2e/cat_test.cpp; chromium, chromium-driver, prometheus: e2e/ops_test.cpp
    test) packages+=(catch2 python3 rsyslog bsdutils apache2-utils openssl curl rclone zstd gzip
      chromium chromium-driver prometheus) ;;
    package) packages+=(lintian zstd man-db systemd) ;;
    lint) packages+=(clang-tidy) ;;
    fuzz) packages+=(clang libclang-rt-14-dev) ;;
    *)
      echo "tools/deps.sh: unknown group '$group' (test, package, lint or fuzz)" >&2
      exit 2
      ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
