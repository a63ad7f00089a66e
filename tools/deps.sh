#!/usr/bin/env bash
# Installs the Debian packages spliced needs to build and test, only those that are missing.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libevent-dev libyaml-cpp-dev libspdlog-dev
  libfmt-dev catch2 libzstd-dev zlib1g-dev netcat-openbsd socat clang-tidy clang libclang-rt-14-dev)
# tests only: a real rsyslog forwards to spliced while it restarts (tests/e2e/senders_test.cpp)
packages+=(rsyslog)
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
