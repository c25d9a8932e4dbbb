"""Where a benchmark run's time goes, and how a dynamic run's split moved, from its events.

Everything here reads the per-rank ``step`` and ``rebalance`` events a run left behind, so the
figures describe the run itself and do not need a quiet machine to mean something: the split
trajectory and the per-rank spread of compute times are facts of the run even when its
throughput is not comparable with another run's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench._common import RunResult, csv
from trainer.event_log import events_path
from trainer.events import StartEvent, StepEvent, parse_event


@dataclass(frozen=True)
class Breakdown:
    """Per-step medians in seconds. ``step`` = ``compute`` + ``rest`` on rank 0's clock."""

    step: float
    compute: float
    """The slowest rank's forward+backward (emulated slowdown included)."""
    wait: float
    """The other ranks' mean wait for the slowest one (0 with one rank)."""
    rest: float
    """The step minus the slowest compute: exposed all-reduce, optimizer, data, Python."""


def rank_steps(result: RunResult) -> list[tuple[StartEvent, dict[int, StepEvent]]]:
    """Every rank's newest start event and the steps that follow it, by step number."""
    out = []
    for rank in range(result.start.world_size):
        start, steps = None, {}
        with open(events_path(result.run_dir, rank), encoding="utf-8") as f:
            for event in map(parse_event, f):
                if isinstance(event, StartEvent):
                    start, steps = event, {}
                elif isinstance(event, StepEvent):
                    steps[event.step] = event
        if start is None:
            raise RuntimeError(f"{result.label}: rank {rank} wrote no start event")
        out.append((start, steps))
    return out


def breakdown(result: RunResult, skip: int) -> Breakdown:
    """Per-step medians over the steps after ``skip`` that every rank reported."""
    ranks = [steps for _, steps in rank_steps(result)]
    common = sorted(set.intersection(*(set(r) for r in ranks)) - set(range(skip + 1)))
    if not common:
        raise RuntimeError(f"{result.label}: no steps after the first {skip}")
    step_s, slowest, wait, rest = [], [], [], []
    for n in common:
        computes = [r[n].compute_s for r in ranks]
        top = max(computes)
        step_s.append(ranks[0][n].step_s)
        slowest.append(top)
        wait.append(statistics.mean(top - c for c in computes))
        rest.append(ranks[0][n].step_s - top)
    return Breakdown(*(statistics.median(v) for v in (step_s, slowest, wait, rest)))


def median_breakdown(results: Sequence[RunResult], skip: int) -> Breakdown:
    """Each field's median over the runs (rounds) of its per-run median."""
    parts = [breakdown(r, skip) for r in results]
    return Breakdown(*(statistics.median(getattr(p, name) for p in parts)
                       for name in ("step", "compute", "wait", "rest")))


def jitter(result: RunResult, skip: int) -> list[tuple[float, float, float]]:
    """Per rank: (slowdown factor, median compute seconds, relative spread) over the steps
    after ``skip`` at the rank's most common share. The spread is the median absolute
    deviation over the median: how much one step's compute wanders. An emulated slowdown ``s``
    sleeps ``s - 1`` times the measured time, so it multiplies a rank's own jitter (another
    process taking its core for a moment) by ``s`` too, where a really slower device would
    not."""
    out = []
    for start, steps in rank_steps(result):
        measured = [e for n, e in steps.items() if n > skip]
        if not measured:
            out.append((start.slowdown, 0.0, 0.0))
            continue
        share = statistics.mode(e.local_batch for e in measured)
        times = [e.compute_s for e in measured if e.local_batch == share]
        m = statistics.median(times)
        mad = statistics.median(abs(t - m) for t in times)
        out.append((start.slowdown, m, mad / m if m > 0 else 0.0))
    return out


def trajectory(result: RunResult) -> str:
    """The split and every change of it: ``32,32 →@11 41,23 →@21 52,12``; changes the
    balancer made after reading a rank's speed change are marked ``(speed)``."""
    text = csv(result.start.split)
    for e in result.rebalances:
        text += f" →@{e.step} {csv(e.split)}" + (" (speed)" if "changed speed" in e.reason else "")
    return text


def near_target(result: RunResult, target: Sequence[int], tolerance: int, skip: int
                ) -> tuple[int | None, float]:
    """The first step whose split is within ``tolerance`` samples of ``target`` on every rank
    (None: never), and the fraction of the steps after ``skip`` that were."""
    def near(split: Sequence[int]) -> bool:
        return all(abs(a - b) <= tolerance for a, b in zip(split, target, strict=True))

    current, first, inside, counted = tuple(result.start.split), None, 0, 0
    changes = {e.step: tuple(e.split) for e in result.rebalances}
    for n in sorted(s.step for s in result.steps):
        current = changes.get(n, current)
        if near(current) and first is None:
            first = n
        if n > skip:
            counted += 1
            inside += near(current)
    return first, inside / counted if counted else 0.0
