#!/usr/bin/env bash
# Makes docs/status-page.png: the status page of a spliced with some traffic (a collect route and
# a proxy route in front of one live backend and one dead one), shot by headless Chromium at
# 1280 px. Needs a built build/test/spliced, chromium, nc and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/build/test/spliced
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin=$(port) app=$(port) lb=$(port) backend=$(port)
cat >"$tmp/spliced.yaml" <<YAML
admin: { listen: 127.0.0.1:$admin }
workers: 2
routes:
  - name: app
    listen: 127.0.0.1:$app
    archive: { dir: $tmp/archive, compress: zstd }
  - name: web
    listen: 127.0.0.1:$lb
    forward:
      upstreams: [127.0.0.1:$backend, 127.0.0.1:1]
      health_check: { interval: 1s, timeout: 500ms, fall: 1, rise: 1 }
YAML
python3 -c "
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $backend)); s.listen(64)
def serve(c):
    while (d := c.recv(65536)): c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
" &
"$bin" -c "$tmp/spliced.yaml" 2>"$tmp/log" &
sleep 2
for i in $(seq 8); do head -c $((i * 700000)) /dev/urandom | nc -N 127.0.0.1 "$app"; done
for i in $(seq 5); do head -c 300000 /dev/urandom | nc -N 127.0.0.1 "$lb" >/dev/null; done
# A steady 4 MiB/s stream, so the rates show.
python3 -c "
import os, socket, time
c = socket.create_connection(('127.0.0.1', $app))
for _ in range(100):
    c.sendall(os.urandom(400 * 1024)); time.sleep(0.1)
" &
sleep 5
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" \
  --window-size=1280,760 --virtual-time-budget=4000 --screenshot=docs/status-page.png \
  "http://127.0.0.1:$admin/" 2>/dev/null
echo docs/status-page.png
