"""The hosts panel's rows: each rank's status (failed, done, straggler...) and why, then the
hosts with no rank yet."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Protocol

from console.model.records import HostInfo, RankRow, RowView
from remote.api import FINAL_RUN_STATES

STRAGGLER_RATIO = 1.25
"""A rank whose compute time is this many times the median's makes the others wait."""

HOST_TO_ROW_STATUS = {
    None: "idle", "connecting": "connecting", "checking": "connecting", "pushing": "pushing",
    "starting": "starting", "running": "starting", "done": "done", "stopped": "done",
    "failed": "failed", "unreachable": "failed", "joining": "joining", "left": "left",
}
DEAD_HOST_STATES = frozenset({"failed", "unreachable"})


class RunFacts(Protocol):
    """What a rank's view reads of the run (``RunModel`` has it; named by shape because the
    model imports this module)."""

    @property
    def hosts(self) -> Mapping[str, HostInfo]: ...

    @property
    def state(self) -> str: ...

    @property
    def state_detail(self) -> str: ...

    @property
    def failed_rank(self) -> int | None: ...


def rank_view(model: RunFacts, row: RankRow, threshold: float | None) -> RowView:
    """How the hosts panel shows one rank: failed, done, starting, straggler or running."""
    host = model.hosts.get(row.host, HostInfo())
    if host.state == "left":  # it left the run live: "left at step N (why)"
        return RowView(host=row.host, rank_row=row, status="left", stale=True,
                       reason=host.detail)
    if row.end_status == "failed" or host.state in DEAD_HOST_STATES or (
            model.failed_rank == row.rank and model.state == "failed"):
        return RowView(host=row.host, rank_row=row, status="failed", stale=True,
                       reason=row.reason or host.detail or model.state_detail)
    if row.end_status is not None or host.state in ("done", "stopped") or (
            model.state in FINAL_RUN_STATES):
        return RowView(host=row.host, rank_row=row, status="done", stale=False,
                       reason=row.reason)
    if row.compute_s is None:
        status = HOST_TO_ROW_STATUS.get(host.state, "starting")
        if status in ("idle", "done"):
            status = "starting"
        return RowView(host=row.host, rank_row=row, status=status, stale=False, reason="")
    straggler = threshold is not None and row.compute_s > threshold
    joined = host.detail if host.detail.startswith("joined") else ""  # the run's history
    return RowView(host=row.host, rank_row=row, status="straggler" if straggler else "running",
                   stale=False, reason=joined)


def straggler_threshold(ranks: Sequence[RankRow]) -> float | None:
    """Compute time above which a running rank counts as a straggler."""
    times = [r.compute_s for r in ranks if r.compute_s is not None and r.end_status is None]
    if len(times) < 2:
        return None
    return STRAGGLER_RATIO * statistics.median(times)


def panel_rows(model: RunFacts, ranks: Sequence[RankRow],
               host_order: Sequence[str]) -> list[RowView]:
    """Every rank in rank order (``ranks``), then the hosts of ``host_order`` with no rank; a
    host that left and joined again shows once, as its rank now."""
    newest = {row.host: row.rank for row in ranks}  # in rank order: a rejoined host's new id
    ranks = [row for row in ranks if newest[row.host] == row.rank or row.end_status != "left"]
    threshold = straggler_threshold(ranks)
    views = [rank_view(model, row, threshold) for row in ranks]
    with_ranks = {row.host for row in ranks}
    for name in host_order:
        if name not in with_ranks:
            info = model.hosts[name]
            views.append(RowView(host=name, rank_row=None, stale=info.state in DEAD_HOST_STATES,
                                 reason=info.detail,
                                 status=HOST_TO_ROW_STATUS.get(info.state, "idle")))
    return views
