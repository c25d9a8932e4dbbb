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


def run_panels(model: RunModel, clock: Callable[[], float]) -> ComposeResult:
    """Header, the panels in their container, and the footer."""
    yield RunHeader(model, clock, id="header")
    with Container(id="body"):
        for panel, panel_id in RUN_PANELS:
            yield cast(Widget, panel(model, id=panel_id))
    yield RunFooter()


def sync_run_panels(screen: DOMNode) -> None:
    """Redraw every panel under the header from the model (each repaints only what changed)."""
    for panel, _ in RUN_PANELS:
        cast(RunPanel, screen.query_one(cast(type[Widget], panel))).sync()
