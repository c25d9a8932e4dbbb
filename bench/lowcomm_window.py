"""What bench/lowcomm_shaped.py reads from one finished run: its steady throughput over wall
time, the CPU each host got in that time, and where a local run's islands spent it.

Every figure is over one **window** of the run's wall clock (the events' ``t``, the clock of
``HostCpuReading.t``): exact and solo runs from the step the balancer has settled by
(``WARMUP_STEPS``) to the last step; local runs from the end of the first round (which waits
for its exchange and chooses the round length) to the end of the last. Wall time, not the
steps' or rounds' own seconds: what a run does between them (events, evaluations,
checkpoints, the tally) costs its throughput too, and counts the same in every way.

A local run's islands, each over the window (fractions of it): **compute** (its inner steps,
``inner_s``), **exchange** (the exposed exchange the last island to arrive saw: the collective,
the quantising, the outer step; ``exchange_s``), **wait** (its own exposed exchange beyond
that: waiting at the round's end for a slower island, ``island_exchange_s``), **other** (the
rest: the tally, events, evaluations, checkpoints, the balancer's choices). Its **speed**
(samples/s while computing) against the same host's solo speed says whether its compute ran
slower together than alone; ``cores`` (process CPU over compute wall) whether its host got its
quota.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench._hosts_cpu import HostCpuReading

WARMUP_STEPS = 12
"""Exact and solo runs: steps before the balancer's first decision (at step 10) and its
settling, left out of the window."""


@dataclass(frozen=True)
class Window:
    """The steady part of a run, in the events' clock."""

    start: float
    end: float
    samples: int
    """Samples trained between ``start`` and ``end``."""

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        """Samples per second of wall time."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class IslandShare:
    """One island of a local run over its window (fractions of the window's wall time)."""

    compute: float
    exchange: float
    wait: float
    other: float
    speed: float
    """Samples per second while computing (its inner steps' samples over their time)."""
    cores: float
    """Its leader's process CPU over its inner steps' wall time (0: not reported)."""


def of_kind(events: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def steady_window(events: Sequence[dict[str, Any]]) -> Window:
    """The run's steady window (see the module): local by its rounds, else by its steps."""
    batch = of_kind(events, "start")[0]["global_batch"]
    rounds = of_kind(events, "round")
    if len(rounds) > 1:
        samples = sum(sum(r["inner_steps"]) for r in rounds[1:]) * batch
        return Window(start=rounds[0]["t"], end=rounds[-1]["t"], samples=samples)
    steps = of_kind(events, "step")
    first = next((e for e in steps if e["step"] >= WARMUP_STEPS), steps[0])
    last = steps[-1]
    return Window(start=first["t"], end=last["t"], samples=(last["step"] - first["step"]) * batch)


def host_cores(readings: Sequence[HostCpuReading], window: Window
               ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each host's cores (CPU seconds per wall second) and its throttled share of CFS periods
    over ``window``, between the readings nearest inside it (empty: fewer than two)."""
    inside = [r for r in readings if window.start <= r.t <= window.end]
    if len(inside) < 2:
        return (), ()
    a, b = inside[0], inside[-1]
    cores = tuple((y - x) / (b.t - a.t) for x, y in zip(a.used_s, b.used_s, strict=True))
    throttled = tuple((tb - ta) / (pb - pa) if pb > pa else 0.0 for ta, tb, pa, pb in
                      zip(a.throttled, b.throttled, a.periods, b.periods, strict=True))
    return cores, throttled


def island_shares(events: Sequence[dict[str, Any]], window: Window) -> list[IslandShare]:
    """Each island's compute, exchange, wait and other over the rounds after the first."""
    batch = of_kind(events, "start")[0]["global_batch"]
    rounds = of_kind(events, "round")[1:]
    if not rounds or window.seconds <= 0:
        return []
    shares = []
    for i in range(len(rounds[0]["inner_steps"])):
        compute = sum(r["inner_s"][i] for r in rounds)
        least = sum(r["exchange_s"] for r in rounds)
        own = sum((r.get("island_exchange_s") or [r["exchange_s"]] * (i + 1))[i]
                  for r in rounds)
        cpu = sum((r.get("inner_cpu_s") or [0.0] * (i + 1))[i] for r in rounds)
        samples = sum(r["inner_steps"][i] for r in rounds) * batch
        shares.append(IslandShare(
            compute=compute / window.seconds, exchange=least / window.seconds,
            wait=(own - least) / window.seconds,
            other=(window.seconds - compute - own) / window.seconds,
            speed=samples / compute if compute > 0 else 0.0,
            cores=cpu / compute if compute > 0 else 0.0))
    return shares


def chosen_rounds(events: Sequence[dict[str, Any]]) -> str:
    """The round lengths the run chose (``H=4/34``), its round count and bytes per sample
    over the window's rounds."""
    batch = of_kind(events, "start")[0]["global_batch"]
    rounds = of_kind(events, "round")
    later = rounds[1:] or rounds
    chosen = [r["round_steps"] for r in rounds[:-1]] or [rounds[-1]["round_steps"]]
    sent = sum(r["exchanged_bytes"] for r in later)
    samples = sum(sum(r["inner_steps"]) for r in later) * batch
    exposed = sum(r["exchange_s"] for r in later) / max(sum(r["round_s"] for r in later), 1e-9)
    return (f"H={'/'.join(map(str, dict.fromkeys(chosen)))}, {len(rounds)} rounds, "
            f"{sent / samples:,.0f} B/sample, exposed {exposed:.1%} of round_s")
