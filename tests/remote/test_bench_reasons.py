"""A bench or rejoin decision's reason, in numbers, reaches every place a user reads decisions:
the console's balancer panel, ``corral report``'s moves table, and the text TensorBoard and the
MLflow/W&B tracker record (both write ``decision_text``)."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from console.report import moves_table
from console.widgets.balancer import decision_row
from figures.reducer import RunFigures
from remote.records.scalars import decision_text
from trainer.balance.cost import Plan, active_reason
from trainer.events import RebalanceEvent

ALL = Plan(split=(8, 8, 8), compute_s=1.94, exchange_s=0.0093)
PAIR = Plan(split=(12, 12, 0), compute_s=0.050, exchange_s=0.0070)
LIFTED = Plan(split=(8, 8, 8), compute_s=0.034, exchange_s=0.0093)


def rebalance(step: int, old: Plan, new: Plan) -> RebalanceEvent:
    return RebalanceEvent(t=float(step), rank=0, step=step, previous=old.split, split=new.split,
                          reason=active_reason(old, new), predicted_gain=0.5,
                          times=(old.compute_s,) * 3, policy="dynamic")


def test_bench_and_rejoin_reasons_reach_the_panel_the_report_and_the_trackers() -> None:
    events = [rebalance(6, ALL, PAIR), rebalance(31, PAIR, LIFTED)]
    assert "rank 2 sits out" in events[0].reason and "rank 2 rejoins" in events[1].reason
    figures = RunFigures()
    for event in events:
        figures.observe(event)
    moves = figures.moves()
    out = io.StringIO()
    Console(file=out, width=400, force_terminal=False, color_system=None).print(
        moves_table(SimpleNamespace(moves=moves)))  # type: ignore[arg-type]
    report = out.getvalue()
    for event, move in zip(events, moves, strict=True):
        assert move.reason == event.reason
        assert event.reason in decision_row(move, 400).plain  # the balancer panel
        assert event.reason in report  # corral report
        assert event.reason in decision_text(event)  # TensorBoard and the tracker
