"""SVG snapshots of the network view and of a log search at 80×24 (docs/console.md shows
them). Regenerate after an intended change with ``--snapshot-update``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from console_helpers import make_app, settle, wait_for
from test_console_log_search import _failed_run
from test_network_view import show_network

from console.widgets.logs import LogsPanel
from console.widgets.past_run import PastRunScreen
from tests.fake_runs import FakeController


def test_network_view_at_80x24(snap_compare: Any) -> None:
    app = make_app(FakeController())

    async def run_before(pilot: Any) -> None:
        await show_network(pilot)
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_log_search_of_a_past_run_at_80x24(snap_compare: Any, tmp_path: Path) -> None:
    app = make_app(FakeController(), config=_failed_run(tmp_path))

    async def run_before(pilot: Any) -> None:
        await pilot.press("h", "enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PastRunScreen))
        logs = pilot.app.screen.query_one(LogsPanel)
        await pilot.press("z", "slash", *"loss", "enter")
        await wait_for(pilot, lambda: logs.search is not None)
        await pilot.press("n")
        pilot.app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
