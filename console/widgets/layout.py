"""The run screen's layout, shared by the live console and a recorded run opened read-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from textual.app import ComposeResult
from textual.containers import Container
from textual.dom import DOMNode
from textual.widget import Widget

from console.model.run import RunModel
from console.widgets.balancer import BalancerPanel
from console.widgets.footer import RunFooter
from console.widgets.header import RunHeader
from console.widgets.hosts import HostsPanel
from console.widgets.log_search import LogSource
from console.widgets.logs import LogsPanel
from console.widgets.loss import LossPanel
from console.widgets.throughput import ThroughputPanel


class RunPanel(Protocol):
    """A panel of the run screen: built on the model, redrawn from it by ``sync``."""

    def __init__(self, model: RunModel, *, id: str | None = None) -> None: ...

    def sync(self) -> None: ...


RUN_PANELS: tuple[tuple[type[RunPanel], str], ...] = (
    (HostsPanel, "hosts"),
    (ThroughputPanel, "throughput"),
    (LossPanel, "loss"),
    (BalancerPanel, "balancer"),
    (LogsPanel, "logs"),
)
"""The panels under the header and their widget ids (app.tcss places them by id), in the
order they are composed and redrawn."""


WIDE_FROM = 150
"""Terminal columns from which the run screen uses its wide layout (app.tcss, ``-wide``)."""
WIDE_TOP_ROWS = (10, 0.5)
"""The wide layout's top row (hosts, throughput): at least this many rows, at most this part
of the body; in between, as many as the hosts panel has rows to show."""


class RunBody(Container):
    """The panels' grid. Wide, its top row fits the hosts panel's rows (a few ranks leave the
    rest to the loss, balancer and logs below); narrow, app.tcss sizes the rows alone."""

    def __init__(self, model: RunModel) -> None:
        super().__init__(id="body")
        self.model = model
        self._rows_set = ""

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Size the rows for the current width and number of hosts panel rows."""
        rows = ""
        if self.screen.size.width >= WIDE_FROM:
            least, most = WIDE_TOP_ROWS
            wanted = len(self.model.rank_and_host_rows()) + 3  # header line and borders
            top = max(least, min(wanted, int(self.size.height * most)))
            rows = f"{top} 1fr 1.5fr"
        if rows == self._rows_set:  # a change re-lays out the screen: only on change
            return
        self._rows_set = rows
        if rows:
            self.set_styles(f"grid-rows: {rows};")
        else:
            self.styles.clear_rule("grid_rows")
            self.refresh(layout=True)


def run_panels(model: RunModel, clock: Callable[[], float], *,
               source: LogSource | None = None) -> ComposeResult:
    """Header, the panels in their container, and the footer (``source``: where the logs
    panel searches the run's lines on disk)."""
    yield RunHeader(model, clock, id="header")
    with RunBody(model):
        for panel, panel_id in RUN_PANELS:
            if panel is LogsPanel:
                yield LogsPanel(model, source=source, id=panel_id)
            else:
                yield cast(Widget, panel(model, id=panel_id))
    yield RunFooter()


def sync_run_panels(screen: DOMNode) -> None:
    """Redraw every panel under the header from the model (each repaints only what changed)."""
    screen.query_one(RunBody).fit()
    for panel, _ in RUN_PANELS:
        cast(RunPanel, screen.query_one(cast(type[Widget], panel))).sync()
