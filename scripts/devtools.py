"""Headless Chromium driven over the DevTools protocol (scripts/screenshots.py): open a page,
click a button by its text, wait for a text to show, save a screenshot, for what `chromium
--screenshot` cannot reach, such as the Prefect UI's Resume form behind its button."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never showed {what}")
            time.sleep(0.3)


def _has_text(text: str) -> str:
    return f"document.body && document.body.innerText.includes({json.dumps(text)})"


def _click_button(text: str) -> str:
    return (
        "(() => { const b = [...document.querySelectorAll('button')]"
        f".find(e => e.innerText.trim() === {json.dumps(text)});"
        " if (b) { b.click(); return true; } return false; })()"
    )


def shoot(
    url: str,
    out: Path,
    *,
    show: str,
    click: str | None = None,
    then_show: str | None = None,
    size: tuple[int, int] = (1400, 1000),
) -> None:
    """Open `url`, wait until the page shows `show`, click the button `click` and wait for
    `then_show`, then save a PNG to `out`."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("needs Debian's chromium: apt-get install chromium")
    port = _free_port()
    profile = Path(tempfile.mkdtemp(prefix="pe-dr-chromium-"))
    browser = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size[0]},{size[1]}",
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("chromium's DevTools endpoint never answered")
            time.sleep(0.3)
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            page = Page(ws)
            page.call("Page.enable")
            page.call("Page.navigate", url=url)
            page.wait_for(_has_text(show), repr(show))
            if click is not None:
                page.wait_for(_click_button(click), f"a button {click!r} to click")
                if then_show is not None:
                    page.wait_for(_has_text(then_show), repr(then_show))
            time.sleep(1.0)  # let transitions settle
            shot = page.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
