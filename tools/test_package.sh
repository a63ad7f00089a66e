#!/usr/bin/env bash
# The package's CI step (root, Debian 12): builds the .deb (tools/package.sh, lintian errors
# fail), installs it with dpkg -i, checks the installed config, man pages, user and unit, runs the
# installed binary as the spliced user on the packaged config and archives a line through it, then
# purges the package. Called by tools/test.sh --package.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "tools/test_package.sh: must run as root (dpkg -i)" >&2
  exit 2
fi
deb=$(tools/package.sh --lint | tail -n 1)
echo "package: $deb"
cleanup() { dpkg --purge spliced >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb"
spliced -t -c /etc/spliced/spliced.yaml
man -w spliced
man -w spliced.yaml
spliced --help >"${TMPDIR:-/tmp}/spliced-help.txt"
grep -q SIGUSR2 "${TMPDIR:-/tmp}/spliced-help.txt"
getent passwd spliced >/dev/null
dpkg-query -W -f='${Conffiles}\n' spliced | grep -q /etc/spliced/spliced.yaml
systemd-analyze verify /lib/systemd/system/spliced.service
# The packaged config runs as the service would (user spliced, in /var/lib/spliced).
tmp=$(mktemp -d)
(cd /var/lib/spliced && exec setpriv --reuid spliced --regid spliced --init-groups /usr/sbin/spliced -c /etc/spliced/spliced.yaml \
  >"$tmp/log" 2>&1) &
pid=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:9180/healthz && break; sleep 0.1; done
printf 'package test line\n' | nc -N 127.0.0.1 5140
curl -sf http://127.0.0.1:9180/status.json | grep -q '"bytes_in":18'
kill -TERM "$pid"
wait "$pid"
find /var/lib/spliced/archive/app -type f -name 'app-*' -exec zstdcat -qf {} + >"$tmp/archived"
grep -qx 'package test line' "$tmp/archived"
rm -rf "$tmp" /var/lib/spliced/archive/app
echo "package: installed, checked and purged"
