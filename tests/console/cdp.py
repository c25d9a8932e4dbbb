"""A headless Chromium driven over the Chrome DevTools Protocol, for the browser view's test.

Just what ``test_serve_browser.py`` needs, on aiohttp (textual-serve's own dependency): open a
URL, read the HTTP status and the page's text, press a key, and read what the console sent
(xterm.js draws on a canvas, so the screen's text is read from the session's websocket frames,
the bytes the browser received, with the terminal's escape sequences taken out).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

START_S = 90.0
"""How long Chromium gets to say where its DevTools listen (a busy 2-core machine)."""
ESCAPES = re.compile(r"\x1b(\[[0-9;:?<=>]*[ -/]*[@-~]"
                     r"|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|.)")
"""Terminal escape sequences: CSI, OSC, DCS-like strings and two-byte escapes."""


def chromium() -> str | None:
    """Debian's Chromium (scripts/system_packages.sh installs it), if this machine has it."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page, its events collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process, http: aiohttp.ClientSession,
                 page: aiohttp.ClientWebSocketResponse) -> None:
        self.process = process
        self._http = http
        self._page = page
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._reader = asyncio.create_task(self._read())
        assert process.stderr is not None
        self._stderr = asyncio.create_task(process.stderr.read())  # never a full pipe

    @classmethod
    async def start(cls, executable: str, profile: Path) -> Browser:
        process = await asyncio.create_subprocess_exec(
            executable, "--headless=new", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "--window-size=1280,800",
            *(["--no-sandbox"] if os.geteuid() == 0 else []), "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            endpoint = await asyncio.wait_for(_devtools_endpoint(process), START_S)
            http = aiohttp.ClientSession()
            async with http.get(f"http://{endpoint}/json/list") as answer:
                targets = await answer.json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            page = await http.ws_connect(page_url, max_msg_size=0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        return cls(process, http, page)

    async def _read(self) -> None:
        async for message in self._page:
            data = message.json()
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append((data["method"], data.get("params", {})))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result."""
        number = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        await self._page.send_json({"id": number, "method": method, "params": params})
        reply = await asyncio.wait_for(answer, 30)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def open(self, url: str) -> int:
        """Load ``url`` (until its load event); the HTTP status of the page itself."""
        await self.call("Network.enable")
        await self.call("Page.enable")
        before = len(self.events)
        frame = (await self.call("Page.navigate", url=url))["frameId"]

        def status() -> int | None:
            for method, params in self.events[before:]:
                if (method == "Network.responseReceived" and params.get("type") == "Document"
                        and params.get("frameId") == frame):
                    return int(params["response"]["status"])
            return None

        await until(lambda: status() is not None and any(
            method == "Page.loadEventFired" for method, _ in self.events[before:]),
            30, f"the page of {url} loaded")
        return status() or 0

    async def page_text(self) -> str:
        found = await self.call("Runtime.evaluate", expression="document.body.innerText",
                                returnByValue=True)
        return str(found["result"].get("value", ""))

    def received(self, since: int = 0) -> str:
        """Everything the page's websockets received after event ``since``, as plain text."""
        chunks = []
        for method, params in self.events[since:]:
            if method != "Network.webSocketFrameReceived":
                continue
            frame = params["response"]
            data = frame["payloadData"]
            if frame.get("opcode") == 2:
                data = base64.b64decode(data).decode("utf-8", errors="replace")
            chunks.append(data)
        return ESCAPES.sub("", "".join(chunks))

    async def press(self, key: str) -> None:
        """Type one printable key into the terminal (xterm's input element has the focus)."""
        await self.call("Runtime.evaluate",
                        expression="document.querySelector('.xterm-helper-textarea').focus()")
        code = f"Key{key.upper()}"
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code,
                            windowsVirtualKeyCode=ord(key.upper()),
                            **({"text": key} if kind == "keyDown" else {}))

    async def close(self) -> None:
        """End Chromium (this test's own process) and everything opened for it."""
        with contextlib.suppress(Exception):
            await self.call("Browser.close")
        await self._page.close()
        await self._http.close()
        for task in (self._reader, self._stderr):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


async def _devtools_endpoint(process: asyncio.subprocess.Process) -> str:
    """``host:port`` from Chromium's "DevTools listening on ws://host:port/..." line."""
    assert process.stderr is not None
    seen = []
    while line := await process.stderr.readline():
        text = line.decode(errors="replace")
        seen.append(text)
        if found := re.search(r"DevTools listening on ws://([^/\s]+)/", text):
            return found.group(1)
    raise AssertionError("chromium exited before listening: " + "".join(seen[-20:]))


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.1)
