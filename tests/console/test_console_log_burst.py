"""A burst of rank lines (a tailer's poll under a flood) reaches the model and the log panel
as one batch: one pass of the model over all of them, one panel update, not one per line."""

from __future__ import annotations

from console_helpers import make_app, settle, wait_for

from console.widgets.logs import LogsPanel
from remote.api import LogLine, RunEvent, RunStatus
from tests.fake_runs import HOLD, FakeController, FakeRun

BURST = 150


def burst_run(run_id: str, **_: object) -> list[RunEvent | str]:
    """A running run, then (once released) a burst of lines of three ranks, then its end."""
    lines = [LogLine(t=1.0, host=f"h{i % 3}", rank=i % 3, text=f"rank {i % 3} line {i}")
             for i in range(BURST)]
    return [RunStatus(t=0.0, run_id=run_id, state="running"), HOLD, *lines,
            RunStatus(t=2.0, run_id=run_id, state="completed")]


async def test_a_burst_of_lines_reaches_the_panel_as_one_batch() -> None:
    controller = FakeController(script=burst_run)
    app = make_app(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "running")
        model = app.session.model
        batches: list[int] = []
        apply_all = model.apply_all

        def counted(events: list[RunEvent]) -> None:
            batches.append(sum(isinstance(e, LogLine) for e in events))
            apply_all(events)

        model.apply_all = counted  # type: ignore[method-assign]
        panel = app.query_one(LogsPanel)
        await settle(pilot)
        seen = len(panel.shown)
        run = controller.runs[0]
        assert isinstance(run, FakeRun)
        run.release()
        await wait_for(pilot, lambda: model.state == "completed")
        assert batches == [BURST]  # every line of the burst in one pass, none on its own
        await settle(pilot)
        shown = [e.text for e in panel.shown[seen:] if e.source != "corral"]
        assert shown == [f"rank {i % 3} line {i}" for i in range(BURST)]
