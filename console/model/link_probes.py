"""A link's figures over its probes: the median of one direction's throughput probes, their
spread and the median round trip, and when they were measured (headless: no Textual, no Rich).

The full-mesh check (``remote/checks/mesh.py``) times each slice of a direction's transfer
(``PairLink.rate_probes``) and each one-byte round trip (``rtt_probes``); one transfer's whole
figure (``bytes_per_s``) swings with the machine's load (721 against 8,765 Mbit/s on one
loopback), the median of its probes much less, and the spread says how much to trust it.
A link from a record written before the probes existed has its one figure as its one probe.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from remote.api import PairLink


@dataclass(frozen=True)
class Probes:
    """One direction of a link, summarised over its probes."""

    median: float
    """Median throughput of the probes, bytes/s."""
    spread: float | None
    """Half the probes' inter-quartile range over the median (0.05: ±5 %); None with fewer
    than two probes."""
    count: int
    """How many probes the figures are over."""
    rtt_s: float | None
    """Median round trip, seconds (None: not measured)."""
    measured_t: float | None
    """When the check measured it, Unix seconds (None: not known)."""

    def age_s(self, now: float) -> float | None:
        """Seconds since the probes were taken (None: not known)."""
        return None if self.measured_t is None else max(0.0, now - self.measured_t)


def probes(link: PairLink | None) -> Probes | None:
    """``link``'s figures over its probes (None: not reached, or no throughput measured)."""
    if link is None or not link.reached:
        return None
    rates = link.rate_probes or ((link.bytes_per_s,) if link.bytes_per_s else ())
    if not rates:
        return None
    median = statistics.median(rates)
    spread = None
    if len(rates) >= 2 and median > 0:
        q1, _, q3 = statistics.quantiles(rates, n=4, method="inclusive")
        spread = (q3 - q1) / 2 / median
    rtt = statistics.median(link.rtt_probes) if link.rtt_probes else link.rtt_s
    return Probes(median, spread, len(rates), rtt, link.measured_t)


def pair_median(a_to_b: Probes | None, b_to_a: Probes | None) -> float | None:
    """A pair's throughput: the slower direction's median (None: not measured both ways), as
    a ring all-reduce over the pair goes at its slower direction's pace."""
    if a_to_b is None or b_to_a is None:
        return None
    return min(a_to_b.median, b_to_a.median)


def age_text(seconds: float | None) -> str:
    """``12s``, ``4m``, ``2h`` ago; ``—`` when not known."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
