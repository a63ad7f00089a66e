#!/usr/bin/env python3
"""Drives headless Chromium through chromedriver's WebDriver HTTP API (standard library only).

    status_page_browser.py URL ROUTE_PORT BYTES SHOT_DIR

Opens the status page at URL, sends BYTES more bytes to 127.0.0.1:ROUTE_PORT (a collect route),
and waits until the page's own script has refreshed the first route's bytes_in cell to the value
it showed plus BYTES. Prints `before=N after=M refreshed=yes|no` and saves screenshots at 1280 px
and at a phone's width (390 px) into SHOT_DIR. Exit 0 when the page refreshed, 1 when not, 2 when
the browser could not be driven.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}").get("value")


def main():
    url, port, more, shots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    driver_port = s.getsockname()[1]
    s.close()
    driver = subprocess.Popen(["chromedriver", f"--port={driver_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{driver_port}"
    profile = tempfile.mkdtemp(prefix="spliced-chromium-")
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,900"]}}}}
        session = call(base, "POST", "/session", caps)["sessionId"]
        sp = f"/session/{session}"
        cell = "return document.querySelector('[data-k=\"routes.0.bytes_in\"]').textContent"
        try:
            call(base, "POST", sp + "/url", {"url": url})
            before = int(call(base, "POST", sp + "/execute/sync", {"script": cell, "args": []}))
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(os.urandom(more))
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # the daemon closes the connection when it has archived everything
            c.close()
            after = before
            for _ in range(150):  # the page refreshes every 3 s
                after = int(call(base, "POST", sp + "/execute/sync", {"script": cell, "args": []}))
                if after == before + more:
                    break
                time.sleep(0.1)
            footer = call(base, "POST", sp + "/execute/sync", {
                "script": "return document.getElementById('refresh').textContent", "args": []})
            for name, (w, h) in (("wide", (1280, 900)), ("phone", (390, 844))):
                call(base, "POST", sp + "/window/rect", {"width": w, "height": h})
                png = base64.b64decode(call(base, "GET", sp + "/screenshot"))
                with open(os.path.join(shots, f"status-{name}.png"), "wb") as f:
                    f.write(png)
            # At a phone's width the page itself is no wider than the window: tables scroll.
            page_width = call(base, "POST", sp + "/execute/sync", {
                "script": "return document.documentElement.scrollWidth", "args": []})
            ok = after == before + more
            print(f"before={before} after={after} refreshed={'yes' if ok else 'no'} "
                  f"footer={footer!r} phone_page_width={page_width}")
            return 0 if ok else 1
        finally:
            call(base, "DELETE", sp)
    except Exception as e:  # noqa: BLE001 - any failure to drive the browser is reported
        print(f"webdriver: {e}")
        return 2
    finally:
        driver.terminate()
        driver.wait()
        subprocess.run(["rm", "-rf", profile])


if __name__ == "__main__":
    sys.exit(main())
