#!/usr/bin/env python3
"""Opens a page in headless chromium, lets it run in real time, saves a PNG.

Used by scripts/screenshots, and by tests/interop/test_dashboard.py (its
`Chromium` class) to read what the admin page shows. The proxy's admin page
computes its rates, percentiles and charts from its own clock between
refreshes, so it must run in real time: `--virtual-time-budget` would distort them, and `--screenshot`
captures right after the first paint. So the browser is driven over the
DevTools protocol (a websocket): open the page, wait, capture. Python 3
standard library only.

Usage: tests/docs/capture_page.py CHROMIUM URL OUT.png [--wait SECONDS] [--size WxH]
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


class DevTools:
    """A minimal websocket client for one DevTools target: `call` sends a
    command and returns its result, keeping the events it reads meanwhile in
    `events`."""

    def __init__(self, ws_url):
        host_port, path = ws_url[len("ws://"):].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket handshake refused: {head[:200]!r}")
        self.next_id = 0
        # Events (messages without an id) read while waiting for answers, in
        # order: only domains a caller enables (e.g. Network.enable) send any.
        self.events = []

    def _recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("the DevTools connection closed")
        return chunk

    def _read(self, n):
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, message):
        data = json.dumps(message).encode()
        n = len(data)
        if n < 126:
            header = bytes([0x81, 0x80 | n])
        elif n < 65536:
            header = bytes([0x81, 0x80 | 126]) + struct.pack(">H", n)
        else:
            header = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _receive(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if b0 & 0x0F in (0x0, 0x1):  # continuation or text
                message += payload
                if b0 & 0x80:
                    return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self._receive()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "id" not in message:
                self.events.append(message)


class Chromium:
    """Headless chromium with one page open on `url`, driven over DevTools.

    A context manager: the browser and its profile are gone on exit. `page`
    is the DevTools connection of the page; `evaluate` runs a JavaScript
    expression in it and returns its value (JSON-like values only). `flags`:
    more command-line flags for chromium (e.g. `--ignore-certificate-errors`).
    """

    def __init__(self, chromium, url, width=1100, height=640, flags=()):
        self.profile = tempfile.mkdtemp(prefix="capture-page-")
        self.page = self.reader = None
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--remote-debugging-port=0", *flags, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            endpoint = None
            for line in self.proc.stderr:
                m = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", line)
                if m:
                    endpoint = m.group(1)
                    break
            if endpoint is None:
                raise RuntimeError("chromium exited before opening its DevTools port")
            # Its later warnings must not fill the pipe and stall it.
            self.reader = threading.Thread(target=self.proc.stderr.read, daemon=True)
            self.reader.start()
            # Never through an HTTP proxy of the environment: the page is local.
            local = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            new = urllib.request.Request(f"http://{endpoint}/json/new?{url}", method="PUT")
            target = json.load(local.open(new, timeout=10))
            self.page = DevTools(target["webSocketDebuggerUrl"])
            self.page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                           deviceScaleFactor=1, mobile=False)
            self.page.call("Page.reload")
        except BaseException:
            self.close()
            raise

    def evaluate(self, expression):
        result = self.page.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, out):
        shot = self.page.call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self):
        if self.page is not None:
            self.page.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.reader is not None:
            self.reader.join(5)
        if self.reader is None or not self.reader.is_alive():
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chromium")
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--wait", type=float, default=6.0, help="real seconds before the capture")
    parser.add_argument("--size", default="1100x640")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))

    with Chromium(args.chromium, args.url, width, height) as browser:
        time.sleep(args.wait)
        browser.screenshot(args.out)
    print(f"capture_page: {args.url} -> {args.out} after {args.wait:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
