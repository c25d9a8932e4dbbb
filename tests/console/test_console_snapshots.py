"""SVG snapshots of the console at fixed sizes (frozen clock, scripted events with fixed times).

Regenerate after an intended change of the layout with
``python -m pytest tests/console/test_console_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from console_helpers import make_app, settle, wait_for

from console.widgets.modals import QuitScreen
from tests.fake_runs import FakeController

Pilot = Any


def run_until(state: Callable[[Any], bool], *keys: str) -> Callable[[Pilot], Awaitable[None]]:
    """Press ``s``, wait until ``state(model)``, press ``keys``, redraw."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("s")
        await wait_for(pilot, lambda: state(pilot.app.session.model))
        if not pilot.app.session.model.live:  # the stream's end is notified after its last event
            await wait_for(pilot, lambda: all(
                w.is_finished for w in pilot.app.workers if w.group == "follow"))
        await settle(pilot)
        if keys:
            await pilot.press(*keys)
        # Toasts expire on a timer: keep them out of the picture.
        pilot.app.clear_notifications()
        await settle(pilot)

    return run_before


def test_completed_run_at_80x24(snap_compare: Any) -> None:
    app = make_app(FakeController())
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=run_until(lambda m: m.state == "completed"))


def test_failed_rank_at_80x24(snap_compare: Any) -> None:
    app = make_app(FakeController(script_options={"fail": (2, 8)}))
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=run_until(lambda m: m.state == "failed"))


def test_live_run_wide_layout_at_160x48(snap_compare: Any) -> None:
    app = make_app(FakeController(script_options={"hold_at": 12}))
    assert snap_compare(app, terminal_size=(160, 48),
                        run_before=run_until(lambda m: m.step == 11))


def test_quit_dialog_with_a_live_run(snap_compare: Any) -> None:
    app = make_app(FakeController(script_options={"hold_at": 12}))

    async def run_before(pilot: Pilot) -> None:
        await run_until(lambda m: m.step == 11)(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, QuitScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_completed_run_at_120x40(snap_compare: Any) -> None:
    """The loss curve with its axes next to throughput; header and panels show the run's
    averages and totals once it has ended."""
    app = make_app(FakeController())
    assert snap_compare(app, terminal_size=(120, 40),
                        run_before=run_until(lambda m: m.state == "completed"))


def test_live_run_at_80x24(snap_compare: Any) -> None:
    """The footer keeps Help and Quit (listed first) at the smallest size."""
    app = make_app(FakeController(script_options={"hold_at": 12}))
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=run_until(lambda m: m.step == 11))


def test_completed_run_wide_layout_at_160x48(snap_compare: Any) -> None:
    """The logs across the whole width: the final model's path is one whole line."""
    app = make_app(FakeController())
    assert snap_compare(app, terminal_size=(160, 48),
                        run_before=run_until(lambda m: m.state == "completed"))


def test_completed_run_logs_zoomed_at_80x24(snap_compare: Any) -> None:
    """``z``: the logs on the whole screen, a line longer than it wrapped, not cut."""
    app = make_app(FakeController())
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=run_until(lambda m: m.state == "completed", "z"))
