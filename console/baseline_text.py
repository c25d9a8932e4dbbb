"""The run against its hosts alone, in words: the header's parts and the report's lines.

The figures are ``figures/solo.py``'s (% of Σ solo, × fastest host, the reason when low, the
advice when the fastest host alone wins); the header (live and finished) and ``corral report``
word them here, so both say the same.
"""

from __future__ import annotations

from console.formatting import fmt_percent, fmt_rate
from figures import SoloBaseline


def baseline_parts(baseline: SoloBaseline) -> list[str]:
    """``92% of Σ solo  1.41× fastest`` (``Σ solo unknown`` without every host's figure)."""
    if baseline.of_sum is None or baseline.x_fastest is None:
        return [] if baseline.cluster_samples_per_s is None else ["Σ solo unknown"]
    return [f"{fmt_percent(baseline.of_sum)} of Σ solo", f"{baseline.x_fastest:.2f}× fastest"]


def low_parts(baseline: SoloBaseline) -> list[str]:
    """When either ratio is low, why, in one part (``low: slow benched ...``), then, when the
    fastest host alone would be faster, that and what would fix it; none else. The header puts
    it last: a narrow screen cuts it before the figures."""
    if not baseline.reason:
        return []
    return [f"low: {baseline.reason}" + (f" — {baseline.advice}" if baseline.advice else "")]


def baseline_facts(baseline: SoloBaseline | None) -> list[tuple[str, str]]:
    """``vs alone``: % of Σ solo and × fastest host with each host's solo samples/s and where
    they came from; ``why low`` and ``slower`` when they apply (figures/solo.py)."""
    if baseline is None:
        return []
    hosts = ", ".join(f"{h.host} {fmt_rate(h.samples_per_s)}" for h in baseline.hosts)
    fastest = baseline.fastest
    if baseline.of_sum is None or baseline.x_fastest is None or fastest is None:
        rows = [("vs alone", f"not known ({baseline.sources}"
                             f"{f'; {hosts}' if hosts else ''})")]
    else:
        rows = [("vs alone", f"{fmt_percent(baseline.of_sum)} of Σ solo "
                             f"{fmt_rate(baseline.sum_solo)} samples/s · "
                             f"{baseline.x_fastest:.2f}× fastest host ({fastest.host}) · "
                             f"{baseline.sources} ({hosts} samples/s)")]
    if baseline.reason:
        rows.append(("why low", baseline.reason))
    if baseline.advice:
        rows.append(("slower", baseline.advice))
    return rows
