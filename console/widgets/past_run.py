"""A past run opened from the runs screen: the live console's panels, read-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen

from console.model.run import RunModel
from console.widgets.header import RunHeader
from console.widgets.layout import run_panels, sync_run_panels
from console.widgets.log_search import LogSource
from console.widgets.runs import READ_ONLY_KEYS


class PastRunScreen(Screen[None]):
    """The same header and panels as the live console, drawn once from a recorded run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("o", "report", "Report"),
        Binding(READ_ONLY_KEYS, "read_only", show=False),
    ]

    def __init__(self, model: RunModel, clock: Callable[[], float], source: LogSource, *,
                 report: Callable[[], None]) -> None:
        super().__init__()
        self.model = model
        self.clock = clock
        self.source = source
        self._report = report

    def compose(self) -> ComposeResult:
        yield from run_panels(self.model, self.clock, source=self.source)

    def on_mount(self) -> None:
        self.sub_title = f"recorded run {self.model.run_id} (read-only)"
        self.call_after_refresh(self.sync)

    def sync(self) -> None:
        """Draw every panel from the model (it does not change)."""
        self.query_one(RunHeader).sync()
        sync_run_panels(self)

    def action_report(self) -> None:
        self._report()

    def action_read_only(self) -> None:
        self.notify("This is a recorded run: nothing to start or stop here (Esc goes back).",
                    severity="warning", timeout=4)

    def action_close(self) -> None:
        self.dismiss(None)
