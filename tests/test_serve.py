"""`caat serve` in a real headless Chromium: the runs page loads, a run's monitor opens,
and a screenshot is taken. Chromium is driven over its DevTools protocol (aiohttp's
websocket client, which textual-serve brings); what the page receives from the dashboard
is read from the websocket frames Chromium reports, since the terminal draws on a canvas.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from caat_app.cli.serve import address_warning, dashboard_command
from caat_app.training.distributed import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; .ci/run does)"
)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


class Page:
    """One Chromium tab over the DevTools protocol, keeping the websocket frames it gets."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.frames = ws, 0, bytearray()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("method") == "Network.webSocketFrameReceived":
                response = msg["params"]["response"]
                data = response["payloadData"]
                self.frames += base64.b64decode(data) if response["opcode"] == 2 else data.encode()
            if msg.get("id") == self.next_id:
                return dict(msg.get("result", {}))

    async def wait_for(self, text: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.frames:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never reached the page")
            await self.call("Runtime.evaluate", expression="1")  # lets events arrive
            await asyncio.sleep(0.2)

    async def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
            )


async def _browse(url: str, profile: Path, shot: Path) -> None:
    import aiohttp

    chromium = subprocess.Popen(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1280,800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "Chromium did not start"
            await asyncio.sleep(0.1)
        devtools = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            targets = await (await http.get(f"http://127.0.0.1:{devtools}/json")).json()
            tab = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Network.enable")
                await page.call("Page.navigate", url=url)
                await page.wait_for("demo-caat")  # the runs page, with the stored runs
                await asyncio.sleep(2)  # the page settles its size and focus
                for kind in ("mousePressed", "mouseReleased"):  # the newest run's row
                    await page.call(
                        "Input.dispatchMouseEvent", type=kind, x=300, y=62, button="left",
                        clickCount=1,
                    )  # fmt: skip
                await page.press("Enter", 13)
                await page.wait_for("Smooth")  # the monitor's footer
                shot.write_bytes(
                    base64.b64decode((await page.call("Page.captureScreenshot"))["data"])
                )
    finally:
        chromium.terminate()
        chromium.wait(timeout=30)


@needs_chromium
@pytest.mark.slow
def test_the_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    db = str(tmp_path / "caat.db")
    assert run_cli("demo", "--db", db, "--epochs", "1") == 0
    port = free_port()
    caat = str(Path(sys.executable).with_name("caat"))
    server = subprocess.Popen(
        [caat, "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_port(port)
        shot = tmp_path / "dashboard.png"
        asyncio.run(_browse(f"http://127.0.0.1:{port}", tmp_path / "profile", shot))
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_warns_for_any_address_but_localhost() -> None:
    command = dashboard_command("sqlite:////tmp/x.db")
    assert "caat_app.cli" in command and "--db sqlite:////tmp/x.db" in command
    for quiet in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert address_warning(quiet, 8000) is None
    for loud in ("0.0.0.0", "192.168.1.5", "lab-server", "::"):
        warning = address_warning(loud, 8000)
        assert warning is not None and warning.startswith(f"warning: listening on {loud}: ")
