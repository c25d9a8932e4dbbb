"""End to end: the console on the repository's cluster.toml with the real (SSH) controller.

Three ``local`` hosts train on this machine: press ``s``, wait until every rank reports steps
and the balancer has moved work, press ``x``, confirm, and check nothing of the run is left.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from console.app import build_app
from console.widgets.modals import ConfirmScreen
from tests.console.console_helpers import wait_for

REPO = Path(__file__).resolve().parents[3]
CLUSTER_TOML = REPO / "cluster.toml"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of this machine's processes that contain ``text`` (not this test's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_start_rebalance_stop_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = build_app(CLUSTER_TOML)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.handle is not None, timeout=30)
        assert app.session.handle is not None
        run_id = app.session.handle.run_id

        def every_rank_stepped_and_rebalanced() -> bool:
            ranks = app.session.model.ranks
            return (len(ranks) == 3 and all(r.step >= 1 for r in ranks.values())
                    and len(app.session.model.decisions) >= 1)

        await wait_for(pilot, lambda: every_rank_stepped_and_rebalanced()
                       or app.session.model.state in ("failed", "completed"), timeout=300)
        check = app.session.model.check_report
        assert app.session.model.state == "running", (
            app.session.model.state, app.session.model.state_detail,
            [e.line for e in list(app.session.model.logs)[-20:]],
            check and [(i.host, i.name, i.detail) for i in check.failures()])
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.controls.last_stop is not None
                       and not app.controls.busy, timeout=90)
        await wait_for(pilot, lambda: not app.session.model.live, timeout=60)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, timeout=30)
    report = app.controls.last_stop
    assert report is not None and report.run_id == run_id
    assert report.clean, report
    assert app.session.model.state == "stopped"
    assert processes_mentioning(run_id) == []
