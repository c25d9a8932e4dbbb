"""A plain script's throughput counts every rank's samples, whatever order their events arrive
in: a plain script declares no global batch, so a step's samples are its ranks' local batches,
and each rank writes its step events in batches (``trainer/integrations/plain_events.py``), so
one rank's events of a step often come long before another's. The report, the console's header
and the live lines read one reducer, which gives a plain run the figures an opt-in run (its
global batch declared) of the same steps gets."""

from __future__ import annotations

import dataclasses
import random

import pytest

from console.model.run import RunModel
from figures import RunFigures
from remote.api import RankEvent, RunStatus
from trainer.events import StartEvent, StepEvent, TrainerEvent

STEPS = 12
LOCAL = (33, 33)
"""Each rank's samples per step (minGPT's shape: two ranks at 330 samples/s each)."""
STEP_S = 0.1
COMPUTE_S = (0.05, 0.08)
TRUE_RATE = sum(LOCAL) / STEP_S
"""660 samples/s: what both ranks did together."""
IDEAL = sum(local / compute for local, compute in zip(LOCAL, COMPUTE_S, strict=True))


def _rank_events(rank: int, *, declared: bool) -> list[TrainerEvent]:
    """One rank's events in the order it writes them: its start, then its steps."""
    start = StartEvent(
        t=1000.0, rank=rank, world_size=2, local_rank=0, host=f"h{rank}", pid=10 + rank,
        device="cpu", device_name="cpu", backend="gloo", model="train.py", dataset="",
        global_batch=sum(LOCAL) if declared else 0, split=LOCAL if declared else (),
        policy="dynamic" if declared else "", step=0, total_steps=STEPS if declared else 0,
        steps_per_epoch=0, threads=1, slowdown=1.0, task="script", exact=declared)
    steps: list[TrainerEvent] = [
        StepEvent(t=1000.0 + step * STEP_S, rank=rank, step=step, epoch=0,
                  local_batch=LOCAL[rank], loss=None, compute_s=COMPUTE_S[rank], step_s=STEP_S)
        for step in range(1, STEPS + 1)]
    return [start, *steps]


def _orders(declared: bool) -> dict[str, list[TrainerEvent]]:
    """The same events in the orders a tail may deliver them (each rank's own order kept)."""
    ranks = [_rank_events(rank, declared=declared) for rank in (0, 1)]
    rng = random.Random(58)
    shuffled: list[TrainerEvent] = []
    queues = [list(events) for events in ranks]
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        shuffled.append(queue.pop(0))
    return {"rank 0 first": ranks[0] + ranks[1], "rank 1 first": ranks[1] + ranks[0],
            "interleaved": [e for pair in zip(*ranks, strict=True) for e in pair],
            "shuffled": shuffled}


@pytest.mark.parametrize("order", ["rank 0 first", "rank 1 first", "interleaved", "shuffled"])
@pytest.mark.parametrize("declared", [False, True], ids=["plain", "opt-in"])
def test_every_ranks_samples_count_in_any_order(order: str, declared: bool) -> None:
    figures = RunFigures()
    for event in _orders(declared)[order]:
        figures.observe(event)
    assert figures.mean_samples_per_s == pytest.approx(TRUE_RATE)
    assert figures.step_rates() == pytest.approx([TRUE_RATE] * STEPS)
    assert figures.ideal_samples_per_s == pytest.approx(IDEAL)
    assert figures.efficiency == pytest.approx(TRUE_RATE / IDEAL)
    assert [rank.mean_samples_per_s for _, rank in sorted(figures.ranks.items())] == \
        pytest.approx([LOCAL[0] / STEP_S, LOCAL[1] / STEP_S])


@pytest.mark.parametrize("order", ["rank 0 first", "rank 1 first", "interleaved", "shuffled"])
def test_console_charts_a_plain_step_once_every_rank_reported(order: str) -> None:
    """The live lines and the header read the model's throughput: each point is a step with
    both ranks' samples, never rank 0's alone, and the finished header is the report's mean."""
    model = RunModel.of_run("plain")
    model.apply(RunStatus(t=999.0, run_id="plain", state="running"))
    live: list[float | None] = []
    for event in _orders(declared=False)[order]:
        model.apply(RankEvent(host=f"h{event.rank}", event=event))
        live.append(model.samples_per_s)
    assert [point.step for point in model.history] == list(range(1, STEPS + 1))
    assert [point.samples_per_s for point in model.history] == pytest.approx([TRUE_RATE] * STEPS)
    assert [rate for rate in live if rate is not None] == pytest.approx(
        [TRUE_RATE] * len([rate for rate in live if rate is not None]))
    assert live[-1] is not None
    assert model.efficiency == pytest.approx(TRUE_RATE / IDEAL)  # the newest complete step's
    model.apply(RunStatus(t=1010.0, run_id="plain", state="completed"))
    assert model.samples_per_s == pytest.approx(TRUE_RATE)
    assert model.efficiency == pytest.approx(TRUE_RATE / IDEAL)


def test_a_redone_plain_step_replaces_its_earlier_samples() -> None:
    """A step run again (its ranks' events of the second run) counts once, with the samples of
    its second run, whichever rank reports it first."""
    figures = RunFigures()
    for event in _orders(declared=False)["interleaved"]:
        figures.observe(event)
    redo = [StepEvent(t=2000.0, rank=rank, step=STEPS, epoch=0, local_batch=10, loss=None,
                      compute_s=0.05, step_s=0.1) for rank in (1, 0)]
    for event in redo:
        figures.observe(event)
    assert figures.step_rates()[-1] == pytest.approx(20 / 0.1)
    total = sum(LOCAL) * (STEPS - 1) + 20
    assert figures.mean_samples_per_s == pytest.approx(total / (STEPS * STEP_S))


def _attempt(t0: float, steps: int) -> list[list[TrainerEvent]]:
    """Each rank's events of one attempt of a plain script (its steps numbered from 1)."""
    return [[dataclasses.replace(event, t=event.t - 1000.0 + t0)
             for event in _rank_events(rank, declared=False)[:steps + 1]] for rank in (0, 1)]


def test_a_relaunched_plain_script_counts_every_attempts_steps() -> None:
    """Its ranks number their steps from 1 again (the script resumes by itself): the run has
    both attempts' steps, its time lost is the gap before the relaunch, and the console's
    model counts them as the report does."""
    first, gap = _attempt(1000.0, 10), 30.0
    second = _attempt(1000.0 + 10 * STEP_S + gap, 8)
    events = first[0] + first[1] + second[0] + second[1]  # rank by rank, as flushed
    figures = RunFigures()
    for event in events:
        figures.observe(event)
    assert (figures.steps_done, figures.restarts) == (18, 1)
    assert sorted(figures.rows) == list(range(1, 19))
    assert figures.lost_s == pytest.approx(gap)
    assert figures.mean_samples_per_s == pytest.approx(TRUE_RATE)
    model = RunModel.of_run("plain")
    for event in events:
        model.apply(RankEvent(host=f"h{event.rank}", event=event))
    assert [point.step for point in model.history] == list(range(1, 19))
    assert model.step == 18 and model.figures.lost_s == pytest.approx(gap)
