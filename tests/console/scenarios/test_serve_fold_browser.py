"""A ``--serve`` tab opened mid-run, in a real headless Chromium, shows the run's real history:
the Balancer's decisions made before the tab opened and the split they made, not `0
decisions` at the launch's split (real torchrun ranks on two ``local`` hosts; the tab's
console is ``corral console --served view`` on the same cluster.toml, attached as
``corral attach`` is, replaying the record first)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from console.model.run import RunModel
from console.serve import ServeLinks, serve_console
from remote.api import load_cluster
from remote.run.controller import SshRunController
from tests.console.cdp import Browser, chromium, until
from tests.remote.runkit import bounded

REPO = Path(__file__).resolve().parents[3]


def _toml(tmp_path: Path) -> Path:
    hosts = "".join(
        f'[[hosts]]\nname = "{name}"\naddress = "local"\npython = "{sys.executable}"\n'
        f'workdir = "{tmp_path / "work"}"\ngpus = 0\nnproc = 1\nthreads = 1\n'
        f"slowdown = {slowdown}\n" for name, slowdown in (("alpha", 1.0), ("beta", 20.0)))
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "tab"\nmaster = "alpha"\nrun_root = "{tmp_path / "runs"}"\n'
                    f"{hosts}[run]\nsamples = 64\nglobal_batch = 8\nsteps = 100000\n"
                    'rebalance_every = 5\npolicy = "dynamic"\nlr = 0.01\ncheckpoint_every = 1000\n')
    return path


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_a_tab_opened_mid_run_shows_the_balancers_real_split_and_decisions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable = chromium()
    if executable is None:
        pytest.skip("no chromium here: scripts/system_packages.sh installs Debian's")
    toml = _toml(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the tab's console: this tree's code
    controller = SshRunController(load_cluster(toml))
    launching = RunModel.of_run("")
    handle = await controller.start()
    launching.reset_run(handle.run_id)
    stream = handle.events()

    async def follow() -> None:
        async for event in bounded(stream):
            launching.apply(event)

    following = asyncio.create_task(follow())
    links: list[ServeLinks] = []
    stop = asyncio.Event()
    server = None
    browser = None
    try:
        await until(lambda: len(launching.decisions) >= 1 or following.done(), 240,
                    "a balancer decision before the tab opens")
        move = launching.decisions[0]
        server = asyncio.create_task(serve_console(toml, port=0, announce=links.append,
                                                   stop=stop))
        await until(lambda: bool(links) or server.done(), 60, "the server listening")
        browser = await Browser.start(executable, tmp_path / "profile")
        assert await browser.open(links[0].view) == 200
        split, before = "/".join(map(str, move.split)), "/".join(map(str, move.previous))
        rows = (f"{before} → {split}", f"{move.step}: →{split}")  # wide, narrow: the first one
        await until(lambda: any(row in browser.received() for row in rows), 180,
                    f"the first decision, {before} → {split}, in the tab")
        assert "alpha:0" in browser.received() and "beta:1" in browser.received()
    finally:
        if browser is not None:
            await browser.close()
        stop.set()
        if server is not None:
            await asyncio.wait_for(server, 60)
        await handle.stop(grace_s=10.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(following, 60)
        await controller.aclose()
