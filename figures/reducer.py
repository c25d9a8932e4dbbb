"""The reducer of a run's typed events into its figures (``RunFigures``).

Feed it a run's trainer events in the order they were written (``observe``): a live stream or a
recorded copy. The definitions of the figures are in ``figures.metrics``; this module
keeps the sums and the steps they are computed from, each step as it last ran.

A plain script numbers each attempt's steps from 1 (its optimizer steps, counted from outside:
``trainer.integrations.plain_events``), whatever snapshot it resumed from; corral's trainer
and the opt-in go on from the step they resumed. So a rank's relaunched plain script has its
steps counted after those of its earlier attempts: the report counts every attempt's steps, and
a relaunch's time lost is its gap, never steps taken for redone ones.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from figures.metrics import (
    Metric,
    Move,
    RankCell,
    RankFigures,
    StepRow,
    efficiency_of,
    ideal_of,
    lower_is_better,
    metric_of,
    outside_compute_of,
    ratio,
)
from trainer.events import (
    MEASURE_AFTER_STEPS,
    CapacityEvent,
    EvalEvent,
    MembershipEvent,
    RebalanceEvent,
    ResourceEvent,
    RoundEvent,
    SamplesEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
)

LOOK_BACK_STEPS = 64
"""How far back from the newest step a live reader looks for one every rank has reported."""


class RunFigures:
    """The reducer: feed it the run's events in order (``observe``), read its figures."""

    def __init__(self) -> None:
        self.rows: dict[int, StepRow] = {}
        """Every step, by step number, as it last ran."""
        self.ranks: dict[int, RankFigures] = {}
        self.first_start: StartEvent | None = None
        """Rank 0's first start (else the first rank's): model, dataset, sizes, policy."""
        self.world_size: int | None = None
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.restarts = 0
        self.lost_s = 0.0
        self.rebalances: list[RebalanceEvent] = []
        self.capacity: CapacityEvent | None = None
        """Rank 0's newest ``capacity`` event: the first split and each rank's solo figure."""
        self.last_round: RoundEvent | None = None
        """``exchange = "local"`` (approximate): rank 0's newest round (docs/lowcomm.md)."""
        self.samples: SamplesEvent | None = None
        """The trained model's generations from held-out prompts (rank 0, at the end)."""
        self.generations: list[MembershipEvent] = []
        """Each change of the run's membership (rank 0's ``membership`` events), in order of
        generation (a refused join keeps the generation it was refused at)."""
        self.members: tuple[int, ...] = ()
        """The newest generation's ranks (event ranks, in its rank order); empty before any
        change of membership (the launch's ranks, 0 to ``world_size`` - 1)."""
        self._evals: dict[str, dict[int, float]] = {}
        self._global_batch: int | None = None
        self._cluster_samples = 0
        self._counted: dict[int, int] = {}
        """Per step, the samples ``_cluster_samples`` holds for it."""
        self._cluster_step_s = 0.0
        self._rank0_started = False
        self._last_rank0_step: StepEvent | None = None
        self._redo_until = 0
        """After a relaunch: the steps up to this one are redone (their time is lost)."""
        self.newly_settled: StepRow | None = None
        """The step the last event settled (rank 0 timed it and all its samples are known):
        a live reader's next throughput point; None when that event settled none."""
        self._settled_t: dict[int, float] = {}
        """Per settled step, the time of its run that settled (a redone step settles again)."""
        self.version = 0
        """Bumped on every event (readers cache what they derive)."""
        self.curves_version = 0
        """Bumped when a loss or eval point arrives (the loss chart redraws then)."""
        self.last_step = 0
        """The newest step any rank reported."""
        self._attempt_base: dict[int, int] = {}
        """Per rank of a plain script: the steps of its earlier attempts (see the docstring)."""
        self._attempt_of: dict[int, int] = {}
        """Per rank of a plain script: which attempt its events are of (0: the first)."""
        self._attempt_top: list[int] = [0]
        """Per attempt: the furthest step any rank reported in it (a stopped rank may not
        have written its last steps: the furthest one counts)."""

    # ---------------------------------------------------------------- reduction
    def observe(self, event: TrainerEvent, host: str = "?") -> TrainerEvent:
        """Absorb one trainer event of rank ``event.rank``, running on ``host``; return it as
        counted (a plain script's step after a relaunch: numbered on from the run's steps)."""
        self.version += 1
        self.newly_settled = None
        self.first_t = event.t if self.first_t is None else min(self.first_t, event.t)
        self.last_t = event.t if self.last_t is None else max(self.last_t, event.t)
        rank = self.ranks.get(event.rank)
        if rank is None:
            rank = self.ranks[event.rank] = RankFigures(rank=event.rank, host=host)
        if isinstance(event, StepEvent):
            event = self._counted_on(event)
            self._step(event, rank)
            self._settle(event.step)
        elif isinstance(event, StartEvent):
            if event.plain_script and event.step == 0:  # a plain script's (re)start
                self._attempt_of[event.rank] = attempt = self._attempt_of.get(event.rank, -1) + 1
                self._attempt_base[event.rank] = max(self._attempt_top[:attempt], default=0)
                self._attempt_top += [0] * (attempt + 1 - len(self._attempt_top))
            self._start(event, rank)
        elif isinstance(event, SamplesEvent):
            self.samples = event
        elif isinstance(event, RoundEvent):
            self._round(event)
            self._settle(event.step)
        elif isinstance(event, ResourceEvent):
            rank.add_resources(event.gpu_util, event.gpu_peak_allocated,
                               event.gpu_peak_reserved)
        elif isinstance(event, CapacityEvent):
            self.capacity = event
        elif isinstance(event, RebalanceEvent):
            self.rebalances = [r for r in self.rebalances if r.step < event.step] + [event]
        elif isinstance(event, MembershipEvent):
            self.generations.append(event)
            if event.change != "refused":  # a step is complete once the ranks in it reported
                self.world_size, self.members = event.world_size, event.members
        elif isinstance(event, EvalEvent) and event.rank == 0:
            for name, value in event.all_metrics().items():
                self._evals.setdefault(name, {})[event.step] = value
                self.curves_version += 1
        return event

    def _counted_on(self, event: StepEvent) -> StepEvent:
        """A plain script's step numbered after its earlier attempts' (the docstring)."""
        if (base := self._attempt_base.get(event.rank, 0)) > 0:
            event = replace(event, step=event.step + base)
        attempt = self._attempt_of.get(event.rank, 0)
        self._attempt_top[attempt] = max(self._attempt_top[attempt], event.step)
        return event

    def _start(self, event: StartEvent, rank: RankFigures) -> None:
        rank.device = "cpu" if event.device == "cpu" else event.device_name
        rank.state_bytes, rank.state_budget = event.state_bytes, event.state_budget
        self._global_batch, self.world_size = event.global_batch, event.world_size
        if self.first_start is None or (event.rank == 0 and not self._rank0_started):
            self.first_start = event
        if event.rank != 0:
            return
        if self._rank0_started:
            self.restarts += 1
            last = self._last_rank0_step
            if last is not None:
                self.lost_s += max(0.0, event.t - last.t)
                self._redo_until = last.step  # rank 0's: other ranks' may be the new attempt's
        self._rank0_started = True

    def _round(self, event: RoundEvent) -> None:
        """A local run's round (after rank 0's step event of it): the round's samples are its
        inner steps' global batches."""
        self.last_round = event
        row = self.rows.get(event.step)
        if row is None or row.step_s is None:
            return
        row.declared_batch = sum(event.inner_steps) * (self._global_batch or 0)
        self._recount(row)

    def _recount(self, row: StepRow) -> None:
        """Count ``row``'s samples in the run's sums as they stand now (once rank 0 has timed
        the step): a step without a declared global batch grows as its ranks report, in any
        order, and a redone step replaces its earlier run's count."""
        if row.step_s is None:
            return
        self._cluster_samples += row.samples - self._counted.get(row.step, 0)
        self._counted[row.step] = row.samples

    def _settle(self, step: int) -> None:
        """Mark ``step`` settled once its samples are all known: the run's declared global
        batch (a local run's: with its round), else every rank's local batch, whichever rank's
        event came last."""
        row = self.rows.get(step)
        if row is None or row.step_s is None or self._settled_t.get(step) == row.t:
            return
        if self.first_start is not None and self.first_start.exchange == "local":
            known = row.declared_batch is not None
        else:
            known = bool(row.declared_batch) or self.complete(row)
        if known:
            self._settled_t[step] = row.t
            self.newly_settled = row

    def _step(self, event: StepEvent, rank: RankFigures) -> None:
        row = self.rows.get(event.step)
        if row is None:
            row = self.rows[event.step] = StepRow(step=event.step)
        # A local run's step event covers a round: its samples come with the round event.
        if self.first_start is None or self.first_start.exchange != "local":
            row.declared_batch = self._global_batch
        self.last_step = max(self.last_step, event.step)
        old = row.cells.get(event.rank)
        if old is not None:
            rank.add(old, -1)
        cell = RankCell(local_batch=event.local_batch, compute_s=event.compute_s,
                        step_s=event.step_s, tokens=event.tokens)
        row.cells[event.rank] = cell
        rank.add(cell, 1)
        if event.rank != 0:
            self._recount(row)  # its samples count whether rank 0's event came first or not
            return
        if row.step_s is not None:  # a redone step: its earlier run's time no longer counts
            self._cluster_step_s -= row.step_s
        if event.step <= self._redo_until:
            self.lost_s += event.step_s
        row.t, row.step_s, row.lr = event.t, event.step_s, event.lr
        row.loss = event.global_loss if event.global_loss is not None else event.loss
        self._cluster_step_s += event.step_s
        self.curves_version += 1
        self._recount(row)
        self._last_rank0_step = event

    # ---------------------------------------------------------------- whole-run figures
    @property
    def has_steps(self) -> bool:
        return self._cluster_step_s > 0

    @property
    def steps_done(self) -> int:
        """The last step that completed (the start's step before any)."""
        if self.rows:
            return max(self.rows)
        return self.first_start.step if self.first_start is not None else 0

    @property
    def wall_s(self) -> float | None:
        """From the run's first event to its last."""
        if self.first_t is None or self.last_t is None or self.last_t <= self.first_t:
            return None
        return self.last_t - self.first_t

    @property
    def mean_samples_per_s(self) -> float | None:
        """Σ step samples / Σ step time (rank 0's), each step once."""
        return ratio(self._cluster_samples, self._cluster_step_s)

    @property
    def ideal_samples_per_s(self) -> float | None:
        """Σ of each rank's solo rate over the run."""
        return ideal_of([rank.solo_rate for rank in self.ranks.values()])

    @property
    def efficiency(self) -> float | None:
        return efficiency_of(self.mean_samples_per_s, self.ideal_samples_per_s)

    @property
    def outside_compute_fraction(self) -> float | None:
        """The part of the steps' time outside the slowest rank's compute (figures.py)."""
        rows = [row for row in self.rows.values() if row.step_s is not None and row.cells]
        return outside_compute_of(sum(row.max_compute_s for row in rows),
                                  sum(row.step_s or 0.0 for row in rows))

    def step_rates(self) -> list[float]:
        """The cluster's throughput of every step rank 0 reported, in step order."""
        rates = (row.samples_per_s for _, row in sorted(self.rows.items()))
        return [rate for rate in rates if rate is not None]

    def loss_points(self) -> list[tuple[int, float]]:
        """``(step, global loss)`` of every step, in step order."""
        return [(step, row.loss) for step, row in sorted(self.rows.items())
                if row.loss is not None]

    @property
    def loss(self) -> Metric | None:
        return metric_of(self.loss_points())

    def eval_points(self) -> dict[str, list[tuple[int, float]]]:
        """Per eval metric: ``(step, value)`` in step order (a redone evaluation once)."""
        return {name: sorted(points.items()) for name, points in self._evals.items()}

    def eval_metrics(self) -> dict[str, Metric]:
        metrics = {name: metric_of(points, lower_is_better(name))
                   for name, points in self.eval_points().items()}
        return {name: metric for name, metric in metrics.items() if metric is not None}

    @property
    def final_lr(self) -> float | None:
        lrs = [row.lr for _, row in sorted(self.rows.items()) if row.lr is not None]
        return lrs[-1] if lrs else None

    def final_share(self, rank: int) -> float | None:
        """``rank``'s part of the global batch at the last step."""
        return self.rows[max(self.rows)].share(rank) if self.rows else None

    # ---------------------------------------------------------------- steps and moves
    def complete(self, row: StepRow) -> bool:
        """Every rank reported the step (as far as the run's size is known)."""
        return row.step_s is not None and len(row.cells) >= (self.world_size or 1)

    def latest_complete_row(self) -> StepRow | None:
        """The newest step every rank has reported (among the last ``LOOK_BACK_STEPS``)."""
        for step in range(self.last_step, max(0, self.last_step - LOOK_BACK_STEPS), -1):
            row = self.rows.get(step)
            if row is not None and self.complete(row):
                return row
        return None

    def measured_gain(self, move: RebalanceEvent) -> float | None:
        """The move's measured gain, once every step of its window ran on every rank."""
        window = [self.rows.get(step) for step in
                  range(move.step, move.step + MEASURE_AFTER_STEPS)]
        before = max(move.times) if move.times else 0.0
        if before <= 0 or any(row is None or not self.complete(row) for row in window):
            return None
        return 1.0 - statistics.fmean(row.max_compute_s for row in window if row) / before

    def changes(self) -> list[Move | MembershipEvent]:
        """Every decision that changed the run, in the order they took effect: the balancer's
        moves (from their step) and each leave, join or lost host (from the step after the
        ``step`` done before it; a refused join changed nothing)."""
        members = [g for g in self.generations if g.change != "refused"]
        return sorted([*self.moves(), *members],
                      key=lambda d: d.step if isinstance(d, Move) else d.step + 1)

    def moves(self) -> list[Move]:
        """Every balancer decision (a redone one once), with its measured gain when known."""
        return [Move(step=event.step, previous=list(event.previous), split=list(event.split),
                     reason=event.reason, policy=event.policy,
                     predicted_gain=event.predicted_gain,
                     measured_gain=self.measured_gain(event)) for event in self.rebalances]

