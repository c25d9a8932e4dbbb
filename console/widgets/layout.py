"""The run screen's layout, shared by the live console and a recorded run opened read-only."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Footer

from console.model.run import RunModel
from console.widgets.balancer import BalancerPanel
from console.widgets.header import RunHeader
from console.widgets.hosts import HostsPanel
from console.widgets.logs import LogsPanel
from console.widgets.loss import LossPanel
from console.widgets.throughput import ThroughputPanel


def run_panels(model: RunModel, clock: Callable[[], float]) -> ComposeResult:
    """Header, the five panels in their container, and the footer."""
    yield RunHeader(model, clock, id="header")
    with Container(id="body"):
        yield HostsPanel(model, id="hosts")
        yield ThroughputPanel(model, id="throughput")
        yield LossPanel(model, id="loss")
        yield BalancerPanel(model, id="balancer")
        yield LogsPanel(model, id="logs")
    yield Footer()
