"""Headless Chromium, driven over the DevTools protocol with the standard library only.

`open_page(path, tmp)` starts Debian's /usr/bin/chromium with the flags this machine needs
(no sandbox as root; no background networking, which a closed network refuses), opens a local
file in it and returns what the tests look at: every request the page made, every console
message, log entry and uncaught exception, the DOM, the box and drawn paths of every `<svg>`,
and screenshots. The DevTools websocket is a few lines of RFC 6455 over a socket, so the tests
need no client library: it carries small JSON messages one at a time, and nothing else.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
TIMEOUT_S = 60.0
"""How long any one step may take before the test fails; never asserted."""

_SVG_BOXES = """JSON.stringify([...document.querySelectorAll('section svg')].map(svg => {
  const r = svg.getBoundingClientRect();
  const skip = 'defs, [id*="matplotlib.axis"], [id*="legend"], [id*="-text_"]';
  const drawn = [...svg.querySelectorAll('g[id*="-axes_"]')].map(axes =>
    [...axes.querySelectorAll('path, use')].filter(e => !e.parentElement.closest(skip)).length - 5);
  return {section: svg.closest('section').id, x: r.x + scrollX, y: r.y + scrollY,
          width: r.width, height: r.height, drawn: drawn};
}))"""
"""Per plot: its box on the page, and per panel the paths drawn besides its background and four
spines (matplotlib's empty axes), outside glyph definitions, axes, legends and labels."""
_LINKS = """JSON.stringify([...document.querySelectorAll('[src], [href], [*|href]')].flatMap(e =>
  [e.getAttribute('src'), e.getAttribute('href'), e.getAttribute('xlink:href')].filter(v => v !== null)))"""


@dataclass
class Page:
    """What loading one page in Chromium showed."""

    url: str
    requests: list[str] = field(default_factory=list)
    """The URL of every request the page made (`Network.requestWillBeSent`)."""
    errors: list[str] = field(default_factory=list)
    """Console errors, error log entries and uncaught exceptions, as text."""
    svgs: list[dict[str, Any]] = field(default_factory=list)
    """Per `<svg>` in a section: its section id, its box on the page and `drawn`, per panel."""
    links: list[str] = field(default_factory=list)
    """Every src and href attribute value of the DOM."""
    dom: str = ""
    clips: dict[str, bytes] = field(default_factory=dict)
    """A PNG screenshot of each plot, by section id."""
    screenshot: bytes = b""
    """A PNG screenshot of the whole page."""


def open_page(path: Path, tmp: Path) -> Page:
    """Load the local file `path` in headless Chromium and record what it did."""
    page = Page(url=path.resolve().as_uri())
    with _chromium(tmp) as devtools:
        for domain in ("Page", "Network", "Runtime", "Log"):
            devtools.call(f"{domain}.enable")
        devtools.call(
            "Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False
        )
        devtools.call("Page.navigate", url=page.url)
        devtools.wait_for("Page.loadEventFired")
        page.svgs = json.loads(devtools.evaluate(_SVG_BOXES))
        page.links = json.loads(devtools.evaluate(_LINKS))
        page.dom = devtools.evaluate("document.documentElement.outerHTML")
        for svg in page.svgs:
            page.clips[svg["section"]] = devtools.screenshot(svg, scale=0.5)
        height = devtools.evaluate("document.documentElement.scrollHeight")
        page.screenshot = devtools.screenshot({"x": 0, "y": 0, "width": 1400, "height": height}, scale=1)
        for method, params in devtools.events:
            _record(page, method, params)
    return page


def _record(page: Page, method: str, params: dict[str, Any]) -> None:
    if method == "Network.requestWillBeSent":
        page.requests.append(params["request"]["url"])
    elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        page.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        page.errors.append(params["entry"]["text"])
    elif method == "Runtime.exceptionThrown":
        page.errors.append(params["exceptionDetails"]["text"])


# -- the browser and its DevTools websocket --------------------------------------------------------


@contextmanager
def _chromium(tmp: Path) -> Iterator[_DevTools]:
    profile = tmp / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's is stale
    stderr = (tmp / "chromium.stderr").open("wb")
    args = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        port = _devtools_port(profile / "DevToolsActivePort", process)
        devtools = _DevTools("127.0.0.1", port, _page_path(port))
        try:
            yield devtools
        finally:
            devtools.close()
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()


def _devtools_port(marker: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with status {process.returncode}")
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def _page_path(port: int) -> str:
    """Return the websocket path of the browser's first page target."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", "/json/list")
        targets = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    return "/" + str(url).split("/", 3)[3]


class _DevTools:
    """One DevTools session over a websocket: commands answered in order, events kept."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._socket = socket.create_connection((host, port), timeout=TIMEOUT_S)
        self._buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self._socket.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._receive()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"DevTools refused the websocket: {head[:200]!r}")
        self._next_id = 0
        self.events: list[tuple[str, dict[str, Any]]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        self._send(json.dumps({"id": self._next_id, "method": method, "params": params}).encode())
        while True:
            message = json.loads(self._message())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message["result"])
            if "method" in message:
                self.events.append((message["method"], message.get("params", {})))

    def wait_for(self, method: str) -> None:
        """Read messages until the event `method` has arrived."""
        while not any(m == method for m, _ in self.events):
            message = json.loads(self._message())
            if "method" in message:
                self.events.append((message["method"], message.get("params", {})))

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page; return its value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]

    def screenshot(self, box: dict[str, Any], *, scale: float) -> bytes:
        """Return a PNG of a region of the page, whether or not it is scrolled into view."""
        clip = {k: box[k] for k in ("x", "y", "width", "height")} | {"scale": scale}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        self._socket.close()

    # -- RFC 6455 framing: client frames masked, server frames not ----------------------------

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        size = (
            bytes([0x80 | n])
            if n < 126
            else (struct.pack("!BH", 0x80 | 126, n) if n < 1 << 16 else struct.pack("!BQ", 0x80 | 127, n))
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._socket.sendall(bytes([0x80 | opcode]) + size + mask + masked)

    def _message(self) -> bytes:
        parts: list[bytes] = []
        while True:
            first, second = self._exactly(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:
                self._send(payload, opcode=0xA)
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts)

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += self._receive()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _receive(self) -> bytes:
        data = self._socket.recv(1 << 20)
        if not data:
            raise ConnectionError("DevTools closed the connection")
        return data


# -- PNG ------------------------------------------------------------------------------------------


def png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB or RGBA PNG into (width, channels, rows of raw samples)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    at, idat, width, height, channels = 8, b"", 0, 0, 0
    while at < len(data):
        (length,), kind = struct.unpack("!I", data[at : at + 4]), data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack("!IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        previous = _unfilter(kind, line, previous, channels)
        rows.append(previous)
    return width, channels, rows


def _unfilter(kind: int, line: bytes, up: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, up, strict=True))
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 0xFF
        elif kind == 3:
            out[i] = (out[i] + ((left + up[i]) >> 1)) & 0xFF
        else:
            corner = up[i - bpp] if i >= bpp else 0
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
            out[i] = (out[i] + predictor) & 0xFF
    return bytes(out)
