"""The network view (``m``): the hosts drawn as columns and every pair as a line between two
of them (box drawing), with each direction's median Mbit/s and spread over its probes, the
round trip and the probes' age; the bottleneck of the exchange marked ``◀`` (the slowest pair
of the hosts in it); a host sitting out drawn beside them, dotted, and its badge saying why.

Drawn from ``console.model.topology`` (the check's measurements and estimate, the run's split);
redrawn every second while open, so a host the balancer benches or brings back shows it. It
reads at 80×24: one line per pair and per host (a long badge wraps under its host); past what
the width holds for names, the columns are numbered and a legend names them.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from console.model.link_probes import Probes, age_text
from console.model.topology import LinkView, Topology
from console.widgets.modals import _Dialog
from remote.api import PairLink

IN_STYLE, OUT_STYLE, LIMIT_STYLE = "green", "yellow", "bold red"
LINE_CELLS = 66
"""The widest line: what a dialog leaves inside an 80-column terminal."""
REDRAW_S = 1.0
"""How often the open view reads the model again."""
FIGURE_CELLS = 38
"""What a link's figures take right of the drawing."""
BESIDE = "  "
"""The gap between the exchange's hosts and those sitting out beside them."""


def _mbit(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 8 / 1e6:,.1f}"


def _direction(found: Probes | None, link: PairLink | None) -> str:
    """``936.0±2%``: one direction's median Mbit/s over its probes and their spread
    (``unreached`` when its connection did not open, ``—`` when not measured)."""
    if link is not None and not link.reached:
        return "unreached"
    if found is None:
        return "—"
    spread = "" if found.spread is None else f"±{found.spread * 100:.0f}%"
    return f"{_mbit(found.median)}{spread}"


def _figures(link: LinkView, now: float) -> Text:
    """``→936.0±2% ←917.3±1% 0.20ms 12s``: both directions, the round trip, the age."""
    probe = link.forward or link.back
    rtt = probe.rtt_s if probe is not None else None
    text = Text(f"→{_direction(link.forward, link.a_to_b)} ←{_direction(link.back, link.b_to_a)}"
                f" {'—' if rtt is None else f'{rtt * 1000:.2f}ms'}"
                f" {age_text(probe.age_s(now) if probe is not None else None)}")
    if link.limiting:
        text.stylize(LIMIT_STYLE)
    elif not link.in_exchange:
        text.stylize("grey50")
    return text


def _columns(top: Topology) -> tuple[list[str], int, bool]:
    """The hosts left to right (the exchange's, then those sitting out), the cells of one
    column, and whether their names fit their columns (else they are numbered)."""
    order = ([b.host for b in top.hosts if not b.sits_out]
             + [b.host for b in top.hosts if b.sits_out])
    room = max(3, (LINE_CELLS - FIGURE_CELLS) // max(len(order), 1))
    longest = max(len(h) for h in order)
    return order, min(room, max(longest + 2, 4)), longest + 1 <= room


def _link_row(link: LinkView, order: list[str], cells: int, out: set[str]) -> Text:
    """One pair as a line between its two hosts' columns: ``├──────┤``, dotted (``┄``) for
    a link of a host that sits out, the other hosts' columns ``│`` (``┆`` sitting out)."""
    left, right = sorted((order.index(link.a), order.index(link.b)))
    dash = "─" if link.in_exchange else "┄"
    row = Text()
    for i, host in enumerate(order):
        mid = cells // 2
        if host in out and (i == 0 or order[i - 1] not in out):  # beside the exchange
            row.append(dash * len(BESIDE) if left < i <= right else BESIDE)
        if i < left or i > right:
            row.append(" " * mid + ("┆" if host in out else "│") + " " * (cells - mid - 1))
        elif i == left:
            row.append(" " * mid + "├" + dash * (cells - mid - 1))
        elif i == right:
            row.append(dash * mid + "┤" + " " * (cells - mid - 1))
        else:
            row.append(dash * cells)
    row.stylize(LIMIT_STYLE if link.limiting else "grey50" if not link.in_exchange else "")
    return row


def drawing(top: Topology, now: float) -> Text:
    """The hosts as columns and every pair as a line between two of them, its figures at the
    right; the exchange's hosts first, those sitting out beside them, dotted."""
    order, cells, named = _columns(top)
    out = {b.host for b in top.hosts if b.sits_out}
    text = Text()
    for i, host in enumerate(order):
        label = host if named else str(i + 1)
        if host in out and (i == 0 or order[i - 1] not in out):
            text.append(BESIDE)
        text.append(f"{label:^{cells}}"[:cells], style=OUT_STYLE if host in out else IN_STYLE)
    text.append("  → ← Mbit/s: median±spread, rtt, age\n", style="bold")
    ranked = sorted(top.links, key=lambda v: not v.in_exchange)  # the exchange's pairs first
    for link in ranked:
        text.append_text(_link_row(link, order, cells, out))
        text.append("◀ " if link.limiting else "  ", style=LIMIT_STYLE)
        text.append_text(_figures(link, now))
        text.append("\n")
    if not named:
        legend = "  ".join(f"{i + 1}\u00a0{host}" for i, host in enumerate(order))
        text.append("\n".join(textwrap.wrap(legend, LINE_CELLS)).replace("\u00a0", " ") + "\n")
    return text


def network_text(top: Topology, now: float | None = None) -> Text:
    """The whole view as lines of text: the drawing, the bottleneck, each host's badge."""
    if not top.measured:
        return Text("No links measured yet: the pre-flight check (c, or a run's start) "
                    "measures every pair of hosts.")
    now = time.time() if now is None else now
    text = drawing(top, now)
    limit = top.limiting
    if limit is not None:
        text.append(f"◀ bottleneck of the exchange: {limit.a}–{limit.b}, "
                    f"{_mbit(limit.median)} Mbit/s\n", style=LIMIT_STYLE)
    name_width = max(len(badge.host) for badge in top.hosts)
    for badge in top.hosts:
        text.append("○ " if badge.sits_out else "● ", style=OUT_STYLE if badge.sits_out
                    else IN_STYLE)
        indent = " " * (name_width + 4)  # under the badge's first word
        wrapped = textwrap.wrap(badge.text, LINE_CELLS - len(indent), break_on_hyphens=False)
        text.append(f"{badge.host:<{name_width}}  " + f"\n{indent}".join(wrapped) + "\n")
    text.rstrip()
    return text


class NetworkScreen(_Dialog):
    """The network view in a box; Esc or Enter closes it."""

    def __init__(self, topology: Callable[[], Topology], *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__("Network: links measured by the check, the run's decision",
                         network_text(topology(), clock()), [("ok", "OK", "primary")])
        self._topology = topology
        self._clock = clock
        """The probes' age is counted on it (the console's clock)."""

    def compose_body(self) -> ComposeResult:
        yield Static(self.body, id="network-body")

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self._redraw)

    def _redraw(self) -> None:
        self.query_one("#network-body", Static).update(
            network_text(self._topology(), self._clock()))
