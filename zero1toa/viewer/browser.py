"""Headless Chromium over the DevTools protocol, for testing and timing the viewer page.

Why a pipe: ``--remote-debugging-pipe`` speaks the protocol on file descriptors 3 and 4, so no
port is opened at all (the project's servers bind to 127.0.0.1; this one binds nowhere) and no
websocket client is needed. Why SwiftShader: the machines running the tests have no GPU;
``--use-angle=swiftshader`` gives WebGL2 on the CPU (slow but exact enough for screenshots).
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """A Chromium binary: ``$ZERO1TOA_CHROMIUM`` or the first of :data:`CHROMIUM_NAMES` on PATH."""
    env = os.environ.get("ZERO1TOA_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class BrowserError(RuntimeError):
    pass


class HeadlessPage:
    """One headless Chromium with one page; ``evaluate`` JS, ``screenshot`` the viewport."""

    def __init__(self, url: str, width: int, height: int, binary: str | None = None, timeout: float = 120.0) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError("no Chromium found (install Debian's `chromium`, or set ZERO1TOA_CHROMIUM)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="zero1toa-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends move above 9 first, so placing them at 3 and 4 cannot clobber one another
        to_browser_r, from_browser_w = (_high_fd(fd) for fd in (to_browser_r, from_browser_w))
        flags = [
            "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
            "--force-color-profile=srgb", "--hide-scrollbars", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        # the protocol wants fds 3 (commands in) and 4 (replies out): bash (dash refuses fds > 9) places our ends there
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self._proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, binary, *flags],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0
        self.console: list[str] = []
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Page.enable", session=True)
            self.send("Runtime.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
            self.send("Page.navigate", {"url": url}, session=True)
        except Exception:
            self.close()
            raise

    # -------------------------------------------------------------- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    err = self._proc.stderr.read().decode("utf-8", "replace")[-2000:] if self._proc.poll() is not None else ""
                    raise BrowserError(f"Chromium closed the protocol pipe. {err}")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("method") == "Runtime.consoleAPICalled":
                args = reply["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif reply.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(reply["params"].get("exceptionDetails", {}))[:2000])
            if reply.get("id") == mid:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The JSON value of a JS expression in the page (raises with the page's exception)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": await_promise}, session=True)
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            raise BrowserError(f"page exception: {det.get('exception', {}).get('description') or det.get('text')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"timed out waiting for {expression!r}; console: {self.console[-5:]}")

    def screenshot(self, width: int, height: int) -> np.ndarray:
        """The top-left ``width`` x ``height`` of the viewport as RGB uint8 [H, W, 3]."""
        from PIL import Image

        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": False}, session=True)["data"]
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        if img.shape[:2] != (height, width):
            raise BrowserError(f"screenshot is {img.shape[1]}x{img.shape[0]}, wanted {width}x{height}")
        return img

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                try:
                    os.write(self._to_browser, json.dumps({"id": 10**6, "method": "Browser.close"}).encode() + b"\0")
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                    self._proc.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self._proc.stderr:
                self._proc.stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessPage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_viewer(html_path: Path, width: int, height: int, timeout: float = 120.0) -> HeadlessPage:
    """Open a viewer page bare (no controls, canvas at the top-left) and wait until it has drawn."""
    url = Path(html_path).resolve().as_uri() + f"#ui=0&w={width}&h={height}"
    page = HeadlessPage(url, width, height, timeout=timeout)
    try:
        state = page.wait_for("window.zero1toaViewer && (window.zero1toaViewer.ready || window.zero1toaViewer.error) && "
                              "JSON.stringify({ready: window.zero1toaViewer.ready, error: window.zero1toaViewer.error})")
        state = json.loads(state)
        if not state["ready"]:
            raise BrowserError(f"the viewer failed: {state['error']}")
    except Exception:
        page.close()
        raise
    return page


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 (or [0, 1] float) images of the same shape."""
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
