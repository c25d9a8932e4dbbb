"""The named values of a run's step, as TensorBoard and the experiment trackers log them.

One vocabulary for every place a run's figures go out as ``(name, value)`` points: the values
are the reducer's (``figures.reducer.RunFigures``), never recomputed from events.
The part of a name before ``/`` is its section (TensorBoard groups by it).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Protocol

from figures.metrics import StepRow, efficiency_of
from figures.reducer import RunFigures
from remote.records.collected import CollectedCopy
from remote.records.history import Recorded
from trainer.events import (
    EvalEvent,
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
)

Scalars = list[tuple[str, float | None]]
PENDING_STEPS = 256
"""Steps kept waiting for every rank's numbers (for the ideal) before they go out without
them."""
RANKS_EVERY_STEP = 32
"""Up to this many ranks, per-rank series get a point every step; a cluster of N ranks gets one
every N // 32 steps (the cluster-wide series still every step): per-rank points cost the
follower CPU for every rank and step, and the viewers sample long series down anyway."""
LOSS = "loss/global"
"""The global loss of each step (rank 0's, over the whole global batch)."""


def step_scalars(figures: RunFigures, row: StepRow, *, ranks: bool,
                 rank_detail: bool = True) -> Scalars:
    """A step's values: loss, lr and throughput once rank 0 reported it, the ideal and the
    efficiency once every rank did, and (``ranks``) each rank's rate and share of the global
    batch, with (``rank_detail``) its compute time and utilisation."""
    values: Scalars = []
    if ranks:
        for rank, cell in sorted(row.cells.items()):
            values += [(f"rank_samples_per_s/rank{rank}", cell.samples_per_s),
                       (f"rank_share/rank{rank}", row.share(rank))]
            if rank_detail:
                values += [(f"rank_compute_s/rank{rank}", cell.compute_s),
                           (f"rank_utilisation/rank{rank}", cell.utilisation)]
    if row.step_s is not None:
        values += [(LOSS, row.loss), ("throughput/cluster_samples_per_s", row.samples_per_s),
                   ("lr/lr", row.lr)]
    if figures.complete(row):
        ideal = row.ideal_samples_per_s
        values += [("throughput/ideal_samples_per_s", ideal),
                   ("throughput/efficiency", efficiency_of(row.samples_per_s, ideal))]
    return values


def eval_scalars(event: EvalEvent) -> Scalars:
    """An evaluation's metrics, ``eval/<metric>``."""
    return [(f"eval/{key}", value) for key, value in event.all_metrics().items()]


def decision_text(event: RebalanceEvent) -> str:
    """``step 6: [16, 16, 16] → [22, 14, 12] (dynamic, predicted +25%): <reason>``."""
    return (f"step {event.step}: {list(event.previous)} → {list(event.split)} "
            f"({event.policy}, predicted {event.predicted_gain:+.0%}): {event.reason}")


class StepFeed:
    """A run's events in, its steps' values out: the base of every writer fed event by event.

    Every typed event goes into the run's reducer (``RunFigures``); a step waits until every
    rank reported it (or, when a rank went quiet, until ``PENDING_STEPS`` newer steps wait),
    then goes out once through ``on_step`` with the values of ``step_scalars`` (each rank's
    compute time and utilisation only with ``rank_detail``). Subclasses
    write them somewhere (``on_step``, ``on_eval``, ``on_decision``, ``on_resource``).
    """

    def __init__(self, *, rank_detail: bool = True) -> None:
        self.figures = RunFigures()
        self.rank_detail = rank_detail
        self._pending: dict[int, float] = {}
        """Steps waiting for every rank, with the time of their newest line."""
        self._rank_step: dict[int, int] = {}
        self._rank_stride = 1
        """Per-rank values go out every this many steps (see ``RANKS_EVERY_STEP``)."""

    def add(self, record: Recorded) -> None:
        """One recorded event line."""
        self.add_event(record.event, record.host)

    def add_event(self, event: TrainerEvent, host: str = "?") -> None:
        """One typed event of a rank running on ``host``."""
        self.figures.observe(event, host)
        if isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, ResourceEvent):
            self.on_resource(self._rank_step.get(event.rank, 0), event)
        elif isinstance(event, RebalanceEvent):
            self.on_decision(event)
        elif isinstance(event, StartEvent):
            self._rank_stride = max(1, event.world_size // RANKS_EVERY_STEP)
        elif isinstance(event, EvalEvent) and event.rank == 0:
            self.on_eval(event)

    def _step(self, event: StepEvent) -> None:
        self._rank_step[event.rank] = event.step
        self._pending[event.step] = max(self._pending.get(event.step, 0.0), event.t)
        if self.figures.complete(self.figures.rows[event.step]):
            self._flush_step(event.step)
        elif len(self._pending) > PENDING_STEPS:
            self._flush_step(min(self._pending))  # a rank went quiet: write what there is

    def _flush_step(self, step: int) -> None:
        t = self._pending.pop(step)
        self.on_step(step, t, step_scalars(self.figures, self.figures.rows[step],
                                           ranks=step % self._rank_stride == 0,
                                           rank_detail=self.rank_detail))

    def flush_pending(self) -> None:
        """Hand out the steps still waiting for a rank (the run ended)."""
        for step in sorted(self._pending):
            self._flush_step(step)

    def on_step(self, step: int, t: float, values: Scalars) -> None:
        """A step's values (every rank in, or given up waiting)."""

    def on_eval(self, event: EvalEvent) -> None:
        """Rank 0's evaluation."""

    def on_decision(self, event: RebalanceEvent) -> None:
        """A balancer decision."""

    def on_resource(self, step: int, event: ResourceEvent) -> None:
        """A rank's resource sample, at its latest step."""


class EventFeed(Protocol):
    """What takes a run's typed events as they are copied (a ``StepFeed``, or a tracker's
    writer that hands them on to its process)."""

    def add_event(self, event: TrainerEvent, host: str = "?") -> None: ...


def feed_copies(copies: Iterable[CollectedCopy], feeds: Sequence[EventFeed]) -> None:
    """Hand the typed event of every line the owned ``copies`` append to each of ``feeds``.

    The stream parsed each line once (for the monitor); every consumer gets that event, none
    parses the text again. A line with no event (not an event file's, a kind this reader does
    not know, or broken: the stream showed it as a log line) goes to none of them."""
    if not feeds:
        return

    def feed(host: str, path: str, text: str, event: TrainerEvent | None) -> None:
        if event is None:
            return
        for writer in feeds:
            writer.add_event(event, host)

    for copy in copies:
        if copy.writer:
            copy.on_line = functools.partial(feed, copy.root.name)
