"""Runs screen: the past runs of this cluster recorded on this machine; Enter opens one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from console.formatting import OUTCOME_STYLES
from remote.api import RunInfo

READ_ONLY_KEYS = "s,x,r,c,p"
"""The live console's run controls: they do nothing on the screens of past runs."""



class RunsScreen(Screen[None]):
    """A table of runs, newest first: Enter opens the run read-only, ``o`` its report."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,h", "close", "Back"),
        Binding("o", "report", "Report"),
        Binding(READ_ONLY_KEYS, "read_only", show=False),
    ]

    def __init__(self, runs: Sequence[RunInfo], *, open_run: Callable[[str], None],
                 report: Callable[[str], None]) -> None:
        super().__init__()
        self.runs = list(runs)
        self._open_run = open_run
        self._report = report

    def compose(self) -> ComposeResult:
        yield Static(Text(f" Runs of this cluster ({len(self.runs)}) · Enter opens one "
                          "read-only · o its report · Esc back", style="bold"), id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "name", "state", "started (UTC)", "hosts", "detail")
        for run in self.runs:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.started))
            table.add_row(run.run_id, run.name, Text(run.state,
                                                     style=OUTCOME_STYLES.get(run.state, "")),
                          started, str(len(run.hosts)), run.detail, key=run.run_id)
        table.focus()

    def selected(self) -> str | None:
        """The run id under the cursor."""
        table = self.query_one(DataTable)
        if not self.runs:
            return None
        return self.runs[max(0, min(table.cursor_row, len(self.runs) - 1))].run_id

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._open_run(event.row_key.value)

    def action_report(self) -> None:
        run_id = self.selected()
        if run_id is not None:
            self._report(run_id)

    def action_read_only(self) -> None:
        self.notify("Past runs are read-only; Esc goes back to start or stop runs.",
                    severity="warning", timeout=4)

    def action_close(self) -> None:
        self.dismiss(None)
