"""The network view (``m``): the hosts as nodes with their badge, every pair's measured
Mbit/s and round trip per direction, and the link that limits the exchange marked.

Drawn from ``console.model.topology`` (the check's measurements and estimate, the run's split);
redrawn every second while open, so a host the balancer benches or brings back shows it. It
reads at 80×24: one line per host and per pair (a long badge wraps under its host).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from console.model.topology import LinkView, Topology
from console.widgets.modals import _Dialog
from remote.api import PairLink

IN_STYLE, OUT_STYLE, LIMIT_STYLE = "green", "yellow", "bold red"
LINE_CELLS = 66
"""The widest line: what a dialog leaves inside an 80-column terminal."""
REDRAW_S = 1.0
"""How often the open view reads the model again."""


def _mbit(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 8 / 1e6:,.1f}"


def _direction(link: PairLink | None) -> str:
    """``  941.2  0.21ms``: one direction's Mbit/s and round trip (``unreached`` when its
    connection did not open)."""
    if link is not None and not link.reached:
        return f"{'unreached':>8} {'':>7}"
    rate = link.bytes_per_s if link is not None else None
    rtt = link.rtt_s if link is not None else None
    return f"{_mbit(rate):>8} {'—' if rtt is None else f'{rtt * 1000:.2f}ms':>7}"


def _pair(link: LinkView, width: int) -> Text:
    name = f"{link.a}–{link.b}"
    text = Text(f"{name:<{width}} {'◀' if link.limiting else ' '} ")
    text.append(_direction(link.a_to_b) + "   " + _direction(link.b_to_a))
    if link.limiting:
        text.stylize(LIMIT_STYLE)
    return text


def network_text(top: Topology) -> Text:
    """The whole view as lines of text."""
    if not top.measured:
        return Text("No links measured yet: the pre-flight check (c, or a run's start) "
                    "measures every pair of hosts.")
    text = Text("hosts  (● in the exchange, ○ sits out)\n", style="bold")
    name_width = max(len(badge.host) for badge in top.hosts)
    for badge in top.hosts:
        text.append("○ " if badge.sits_out else "● ", style=OUT_STYLE if badge.sits_out
                    else IN_STYLE)
        indent = " " * (name_width + 4)  # under the badge's first word
        wrapped = textwrap.wrap(badge.text, LINE_CELLS - len(indent), break_on_hyphens=False)
        text.append(f"{badge.host:<{name_width}}  " + f"\n{indent}".join(wrapped) + "\n")
    width = max(len(f"{link.a}–{link.b}") for link in top.links)
    text.append(f"\n{'links':<{width}}   {'→ Mbit/s':>8} {'rtt':>7}   {'← Mbit/s':>8} "
                f"{'rtt':>7}\n", style="bold")
    for link in top.links:
        text.append_text(_pair(link, width))
        text.append("\n")
    limit = top.limiting
    if limit is not None:
        out = [b.host for b in top.hosts if b.sits_out and b.host in (limit.a, limit.b)]
        text.append(f"◀ limits the exchange: {limit.a}–{limit.b}, {_mbit(limit.bytes_per_s)} "
                    "Mbit/s" + (f" ({', '.join(out)} sits out)" if out else ""),
                    style=LIMIT_STYLE)
    return text


class NetworkScreen(_Dialog):
    """The network view in a box; Esc or Enter closes it."""

    def __init__(self, topology: Callable[[], Topology]) -> None:
        super().__init__("Network: links measured by the check, the run's decision",
                         network_text(topology()), [("ok", "OK", "primary")])
        self._topology = topology

    def compose_body(self) -> ComposeResult:
        yield Static(self.body, id="network-body")

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self._redraw)

    def _redraw(self) -> None:
        self.query_one("#network-body", Static).update(network_text(self._topology()))
