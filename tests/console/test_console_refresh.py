"""Redraw economy: a flood of events slows the panels to 2 Hz; a sync repaints changed rows only."""

from __future__ import annotations

from console_helpers import make_app, screen_text, settle, wait_for

from console.app import BUSY_CHANGES_PER_S
from console.widgets.hosts import HostsPanel
from console.widgets.lines_view import LinesView
from console.widgets.logs import LogsPanel
from tests.fake_runs import FakeController


async def test_a_flood_of_changes_is_drawn_late_but_drawn() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # A redraw just now (not the one before settle's pause, which a busy machine can stretch
        # past BUSY_REFRESH_S)...
        app.refresh_panels(force=True)
        drawn = app._drawn_version
        # ...then far more changes than BUSY_CHANGES_PER_S: this tick is skipped...
        app.session.model.version += 10 * BUSY_CHANGES_PER_S
        app.refresh_panels()
        assert app._drawn_version == drawn
        # ...and the refresh timer draws them within the slower period.
        await wait_for(pilot, lambda: app._drawn_version == app.session.model.version, timeout=2.0)


async def test_a_quiet_change_is_drawn_at_once() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.session.model.version += 1
        app.refresh_panels()
        assert app._drawn_version == app.session.model.version


async def test_sync_repaints_only_the_rows_that_changed() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        view = app.query_one(HostsPanel)
        repainted: list[int] = []
        original = LinesView.refresh_line

        def spy(self: LinesView, y: int) -> None:
            if self is view:
                repainted.append(y)
            original(self, y)

        LinesView.refresh_line = spy  # type: ignore[method-assign,assignment]
        try:
            app.session.model.ranks[1].samples_per_s = 12345.0
            app.session.model.version += 1
            await settle(pilot)
            text = screen_text(app)
        finally:
            LinesView.refresh_line = original  # type: ignore[method-assign]
    assert "12.3k" in text
    assert repainted == [2]  # rank 1's line, under the column titles and rank 0


async def test_followed_logs_show_the_newest_line_as_soon_as_synced() -> None:
    """Follow scrolls within the sync that adds the lines, not after a later screen refresh
    (which a busy machine may not reach before the next screenshot or keypress)."""
    app = make_app(FakeController())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for i in range(40):
            app.session.model.add_log("corral", f"line {i}", t=float(i))
        view = app.query_one("#log-lines", LinesView)
        app.query_one(LogsPanel).sync()
        assert view.max_scroll_y > 0
        assert view.scroll_offset.y == view.max_scroll_y
        await settle(pilot)
        assert "line 39" in screen_text(app)
