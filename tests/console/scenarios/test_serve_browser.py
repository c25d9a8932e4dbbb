"""The browser view (``corral console --serve``) in a real headless Chromium, one session.

The server is ``console.serve``'s own; each tab's console is the real ``ConsoleApp`` on the
fake controller (``served_fake_console.py``, started by textual-serve as it starts
``corral console --served ROLE``), attached to a run held live. One browser proves the three
facts: without the token the page is refused; with it, the page shows the hosts table of the
running run; the read-only console refuses the stop key and the run was never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

import aiohttp
import pytest

from console.serve import Role, ServeLinks, serve_console
from tests.console.cdp import Browser, chromium, until

HERE = Path(__file__).resolve().parents[1]  # the console tests' helpers
REPO = HERE.parents[1]
CHILD = HERE / "served_fake_console.py"


def fake_console(role: Role) -> str:
    return "exec " + shlex.join([sys.executable, str(CHILD), role])


def consoles_running() -> list[str]:
    """This machine's processes that run the fake tab console (none once the server ended)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and str(CHILD).encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_browser_needs_the_token_shows_the_hosts_and_cannot_stop_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable = chromium()
    if executable is None:
        pytest.skip("no chromium here: scripts/system_packages.sh installs Debian's")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CORRAL_TEST_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    links: list[ServeLinks] = []
    stop = asyncio.Event()
    server = asyncio.create_task(serve_console(tmp_path / "cluster.toml", port=0,
                                               announce=links.append, stop=stop,
                                               command=fake_console))
    await until(lambda: bool(links) or server.done(), 60, "the server listening")
    view = links[0].view
    assert links[0].control is None  # read-only unless --controls
    browser = await Browser.start(executable, tmp_path / "profile")
    try:
        # Without the token, and with a wrong one, the page is refused.
        bare = view.split("?")[0]
        assert await browser.open(bare) == 403
        assert "refused" in await browser.page_text()
        assert await browser.open(bare + "?token=" + "x" * 32) == 403
        async with aiohttp.ClientSession() as http:  # the session socket too
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(bare.replace("http", "ws") + "ws/wrong")
            assert refused.value.status == 403

        # With it: the console of the running run, its hosts table.
        assert await browser.open(view) == 200
        await until(lambda: all(word in browser.received()
                                for word in ("Hosts & ranks", "alpha", "beta", "gamma")),
                    120, "the hosts table in the page")
        await until(lambda: "running" in browser.received(), 30, "the run shown running")

        # The read-only console answers the stop key "read-only view" and asks nothing.
        mark = len(browser.events)
        await browser.press("x")
        await until(lambda: "read-only view" in browser.received(mark), 30,
                    "the read-only answer to x")
        await browser.press("y")  # would confirm a stop question, had there been one
        assert "on every host?" not in browser.received(mark)
    finally:
        await browser.close()
        stop.set()
        await asyncio.wait_for(server, 60)
    await until(lambda: not consoles_running(), 30, "every tab's console ended")
    tabs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [t["role"] for t in tabs] == ["view"]
    assert tabs[0]["stopped"] == 0 and "attach" in tabs[0]["calls"]
