"""What the operator can read at the smallest and a large terminal, running and finished: the
footer's Help and Quit keys, log lines wrapped rather than cut, the logs zoomed to the screen
and back, the help scrolled with the arrow keys, and dialogs that say which key does what."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from console_helpers import make_app, screen_text, settle, wait_for

from console.widgets.logs import LogsPanel, wrapped_rows
from console.widgets.modals import ConfirmScreen, HelpScreen
from tests.fake_runs import FakeController

FINAL_LINE = "corral trainer: the trained result is in /root/.corral/runs/fake-1/final"
"""The fake run's last rank output: longer than the logs panel is wide at 80x24."""


async def _run_to(pilot: Any, state: str) -> None:
    await pilot.press("s")
    app = pilot.app
    if state == "running":
        await wait_for(pilot, lambda: app.session.model.step == 11)
    else:
        await wait_for(pilot, lambda: app.session.model.state == "completed")
    await settle(pilot)


def _footer(app: Any) -> str:
    return screen_text(app).splitlines()[-1]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
@pytest.mark.parametrize("state", ["running", "completed"])
def test_the_footer_always_shows_help_and_quit(size: tuple[int, int], state: str) -> None:
    async def scenario() -> None:
        options = {"hold_at": 12} if state == "running" else {}
        app = make_app(FakeController(script_options=options))
        async with app.run_test(size=size) as pilot:
            await _run_to(pilot, state)
            footer = _footer(app)
            assert "? Help" in footer and "q Quit" in footer, footer
            if size[0] >= 160:
                assert "h Runs" in footer and "o Report" in footer and "z Zoom" in footer

    asyncio.run(scenario())


def test_a_long_log_line_is_wrapped_whole_at_80x24_and_zoom_shows_it() -> None:
    async def scenario() -> None:
        app = make_app(FakeController())
        async with app.run_test(size=(80, 24)) as pilot:
            await _run_to(pilot, "completed")
            logs = app.query_one(LogsPanel)
            width = logs.query_one("#log-lines").size.width
            assert len(FINAL_LINE) > width  # the case: longer than the panel
            rows = [row.plain for row in logs.rows]
            assert all(len(row) < width for row in rows)
            joined = "".join(row.strip() for row in rows)
            assert FINAL_LINE.replace(" ", "") in joined.replace(" ", "")
            await pilot.press("z")
            await settle(pilot)
            assert app.screen.maximized is logs
            text = screen_text(app)
            assert "Hosts & ranks" not in text
            assert "/root/.corral/runs/fake-1/fi" in text
            await pilot.press("z")
            await settle(pilot)
            assert app.screen.maximized is None and "Hosts & ranks" in screen_text(app)

    asyncio.run(scenario())


def test_wrapped_rows_keep_every_character_and_indent_the_rest() -> None:
    from rich.text import Text

    line = Text("alpha:0 " + "x" * 50)
    rows = wrapped_rows(line, 20)
    assert [len(r.plain) for r in rows] == [20, 20, 20, 4]  # 58 = 20 + 18 + 18 + 2
    assert all(r.plain.startswith("  ") for r in rows[1:])
    assert "".join(r.plain[2:] if i else r.plain for i, r in enumerate(rows)) == line.plain
    assert wrapped_rows(Text("short"), 20)[0].plain == "short"


def test_help_scrolls_with_the_arrow_keys_without_tab() -> None:
    async def scenario() -> None:
        app = make_app(FakeController())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause()
            from textual.containers import VerticalScroll

            scroll = app.screen.query_one(VerticalScroll)
            assert scroll.max_scroll_y > 0  # the help is taller than 24 rows
            await pilot.press("down", "down")
            await wait_for(pilot, lambda: scroll.scroll_y >= 2)
            await pilot.press("pagedown")
            await wait_for(pilot, lambda: scroll.scroll_y > 2)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))

    asyncio.run(scenario())


def test_the_stop_dialog_says_its_keys_and_enter_cancels() -> None:
    async def scenario() -> None:
        app = make_app(FakeController(script_options={"hold_at": 12}))
        async with app.run_test(size=(80, 24)) as pilot:
            await _run_to(pilot, "running")
            for key in ("x", "r"):  # stop and restart ask the same way
                await pilot.press(key)
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.pause()
                text = screen_text(app)
                assert "[y]" in text and "[n] or Esc: Cancel" in text and "Enter" in text
                assert "Cancel (n)" in text
                await pilot.press("enter")
                await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
                assert app.session.model.live and app.controls.busy == ""

    asyncio.run(scenario())


def test_the_balancer_relabels_its_shares_as_ranks_report_at_the_first_step() -> None:
    """The split is known (rank 1's start) before ranks 0 and 2 have reported: their shares
    read ``rank 0``/``rank 2``; once they report, the same split is redrawn with their hosts."""
    from textual.app import App, ComposeResult

    from console.model.run import RunModel
    from console.widgets.balancer import BalancerPanel
    from remote.api import RankEvent
    from tests.fake_runs import DEMO_HOSTS, events_only, scripted_run
    from trainer.events import StartEvent

    events = events_only(scripted_run("r1", steps=3))
    starts = [e for e in events if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)]
    model = RunModel(cluster_name="lab", hosts=[h.name for h in DEMO_HOSTS], policy="dynamic",
                     total_steps=3, global_batch=60)

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield BalancerPanel(model, id="balancer")

    def labels(app: App[None]) -> list[str]:
        rows = screen_text(app).splitlines()
        return [row.split()[0] for row in rows if "█" in row]

    async def scenario() -> None:
        app = One()
        async with app.run_test(size=(60, 10)) as pilot:
            model.apply(starts[1])  # the medium host's rank reports first
            app.query_one(BalancerPanel).sync()
            await pilot.pause()
            assert labels(app) == ["rank", "beta:1", "rank"]
            model.apply(starts[0])
            model.apply(starts[2])
            app.query_one(BalancerPanel).sync()
            await pilot.pause()
            assert labels(app) == ["alpha:0", "beta:1", "gamma:2"]

    asyncio.run(scenario())


def test_the_wide_layout_fits_the_hosts_row_to_its_ranks_and_narrow_undoes_it() -> None:
    """160x48 with three ranks: the top row is the hosts panel's few rows (the floor of 10),
    the rest goes to the panels below, the logs the tallest; back at 80x24 the narrow layout's
    own rows apply again (hosts across the whole width)."""
    from console.widgets.layout import RunBody

    async def scenario() -> None:
        app = make_app(FakeController())
        async with app.run_test(size=(160, 48)) as pilot:
            await _run_to(pilot, "completed")
            hosts = app.query_one("#hosts")
            logs = app.query_one(LogsPanel)
            assert hosts.outer_size.height == 10 and logs.outer_size.width == 160
            assert logs.outer_size.height > app.query_one("#loss").outer_size.height > 10
            await pilot.resize_terminal(80, 24)
            await wait_for(pilot, lambda: app.query_one(RunBody)._rows_set == "")
            await settle(pilot)
            assert hosts.outer_size.width == 80 and logs.outer_size.width < 80

    asyncio.run(scenario())
