"""The one step reporter writes measurements; the reducer derives every throughput from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from figures.reducer import RunFigures
from trainer.balance.config import Decision
from trainer.event_log import EventWriter
from trainer.events import RebalanceEvent, StepEvent, parse_event
from trainer.step_report import LossTally, OptimizerFacts, report_rebalance, report_step


def test_step_events_carry_measurements_and_the_reducer_derives_the_rates(
        tmp_path: Path) -> None:
    tallies = [LossTally(loss_sum=6.0, units=3), LossTally(loss_sum=2.0, units=5)]
    shares, compute, step_s = (3, 5), (0.3, 0.2), 0.5
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as events:
        for rank in (0, 1):
            report_step(events, rank=rank, step=1, epoch=0, local_batch=shares[rank],
                        tallies=tallies, compute_s=compute[rank], step_s=step_s,
                        optimizer=OptimizerFacts(lr=0.1))
    written = [parse_event(line) for line in path.read_text().splitlines()]
    steps = [event for event in written if isinstance(event, StepEvent)]
    assert [e.loss for e in steps] == [2.0, 0.4]
    assert steps[0].global_loss == pytest.approx(8.0 / 8) and steps[1].global_loss is None
    assert all(e.samples_per_s is None and e.cluster_samples_per_s is None for e in steps)
    figures = RunFigures()
    for event in steps:
        figures.observe(event)
    row = figures.rows[1]
    assert [row.cells[rank].samples_per_s for rank in (0, 1)] == [3 / 0.5, 5 / 0.5]
    assert row.samples_per_s == pytest.approx(8 / 0.5)
    assert row.ideal_samples_per_s == pytest.approx(3 / 0.3 + 5 / 0.2)


def test_a_change_of_active_set_carries_the_cost_models_figures(tmp_path: Path) -> None:
    benched = Decision(previous=(32, 32), split=(64, 0), reason="rank 1 sits out",
                       predicted_gain=0.9, times=(0.04, 3.3), compute_s=(3.32, 0.084),
                       exchange_s=(0.02, 0.0))
    moved = Decision(previous=(32, 32), split=(40, 24), reason="moved 8 samples",
                     predicted_gain=0.1, times=(0.04, 0.06))
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as events:
        for decision in (benched, moved):
            report_rebalance(events, decision, step=11, previous=decision.previous,
                             split=decision.split, policy="dynamic")
    written = [parse_event(line) for line in path.read_text().splitlines()]
    assert all(isinstance(event, RebalanceEvent) for event in written)
    assert [(e.compute_s, e.exchange_s) for e in written] == [  # type: ignore[union-attr]
        ((3.32, 0.084), (0.02, 0.0)), (None, None)]
