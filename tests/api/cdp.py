"""A small Chrome DevTools Protocol client: headless Debian Chromium driven over a websocket."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_RECORD_CSP = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation', e =>"
    " window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`"
    " + ` at ${e.sourceFile}:${e.lineNumber}`));"
)


class Browser:
    """One Chromium process (a fresh profile) and its first page; stop it with :meth:`close`."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 1000):
        assert CHROMIUM is not None
        args = [
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"),
            *("--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"),
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
        ]
        self.proc = subprocess.Popen(
            [CHROMIUM, *args, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.seq = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        # Every page records what its Content-Security-Policy blocked (see csp_violations).
        self.send("Page.addScriptToEvaluateOnNewDocument", source=_RECORD_CSP)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.seq:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            try:
                last = self.eval(expression)
            except RuntimeError:  # the page is navigating: its old context is gone
                last = None
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression} (last: {last!r})")

    def csp_violations(self) -> list[str]:
        """What the page's Content-Security-Policy blocked since it loaded."""
        found: list[str] = self.eval("window.__csp || []")
        return found

    def goto(self, url: str, page: str) -> None:
        self.send("Page.navigate", url=url)
        self.loaded(page)

    def loaded(self, page: str) -> None:
        self.wait(f"document.readyState === 'complete' && document.body.dataset.page === {json.dumps(page)}")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        self.click_at(*box)

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def key(self, key: str) -> None:
        code = 13 if key == "Enter" else ord(key.upper())
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                windowsVirtualKeyCode=code,
                **({"text": "\r" if key == "Enter" else key} if kind == "keyDown" else {}),
            )

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
