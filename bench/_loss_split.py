"""bench/solo_sum.py's split of the gap to Σ solo: the concurrent solo arm's rates over the
window where every host ran (the machine's co-location loss against each host alone), and the
cluster's steps against its hosts' own rates (corral's own loss, by cause). Pure functions of
step events."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from trainer.events import StepEvent


def concurrent_steps(slowdowns: tuple[float, ...], steps: int) -> list[int]:
    """Steps of each host's concurrent solo loop: the slowest host ``steps``, a faster one
    proportionally more, so every host keeps running until the slowest has done its steps."""
    slowest = max(slowdowns)
    return [math.ceil(steps * slowest / s) for s in slowdowns]


def overlap_rates(hosts: list[list[StepEvent]], global_batch: int, skip: int) -> list[float]:
    """Each host's median samples/s (``global_batch`` / step time) over its steps that ran
    while every host was past its first ``skip`` steps and none had finished: the rates of
    hosts running at the same time, each ``hosts[i]`` a host's step events (``t``: the
    step's end). Raises ``RuntimeError`` when a host has no step in that window."""
    def warmed(steps: list[StepEvent]) -> float:
        done = [s.t for s in steps if s.step == skip]
        return done[0] if done else steps[0].t - steps[0].step_s

    start = max(warmed(steps) for steps in hosts)
    end = min(steps[-1].t for steps in hosts)
    rates = []
    for i, steps in enumerate(hosts):
        inside = [global_batch / s.step_s for s in steps
                  if s.step > skip and s.t - s.step_s >= start and s.t <= end and s.step_s > 0]
        if not inside:
            raise RuntimeError(f"concurrent solo: host {i} ran no step while every host ran "
                               f"past its first {skip} (more --steps)")
        rates.append(statistics.median(inside))
    return rates


@dataclass(frozen=True)
class Parts:
    """The cluster's steps after the warm-up against its hosts' own rates in them, as factors
    whose product is Σ samples / Σ step time ÷ ``ideal``: where corral's own loss went."""

    ideal: float
    """Σ over ranks of Σ samples / Σ compute seconds: the hosts' rates at their shares."""
    balance: float
    """Σ samples / the slowest rank's Σ compute ÷ ``ideal``: how evenly the split shares the
    compute on average (1: every rank computes as long; a best static split comes close)."""
    jitter: float
    """The slowest rank's Σ compute ÷ Σ over steps of that step's slowest compute: the wait
    for whichever rank is slowest in each step beyond the average (noise, co-location)."""
    outside: float
    """Σ steps' slowest compute ÷ Σ step time: the exchange, optimizer, events, step boundary."""


def cluster_parts(ranks: list[list[StepEvent]], skip: int) -> Parts:
    """``Parts`` of a run from every rank's step events (``ranks[r]``: rank r's, rank 0's
    ``step_s`` the step time), over the steps after the first ``skip``. Raises
    ``RuntimeError`` when there are none."""
    steps = [{e.step: e for e in events if e.step > skip} for events in ranks]
    common = sorted(set.intersection(*(set(s) for s in steps)))
    if not common:
        raise RuntimeError(f"cluster: no step after the first {skip} on every rank")
    samples = sum(e[k].local_batch for e in steps for k in common)
    computes = [sum(e[k].compute_s for k in common) for e in steps]
    ideal = sum(sum(e[k].local_batch for k in common) / c for e, c in zip(steps, computes,
                                                                              strict=True) if c)
    slowest = sum(max(e[k].compute_s for e in steps) for k in common)
    wall = sum(steps[0][k].step_s for k in common)
    return Parts(ideal=ideal, balance=samples / max(computes) / ideal,
                 jitter=max(computes) / slowest, outside=slowest / wall)
