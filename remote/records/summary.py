"""One run's numbers, reduced from its recorded events: what ``corral report`` shows.

``summarize(history)`` turns a ``RunHistory`` into a frozen ``RunSummary`` (JSON-ready, the
schema of ``corral report --json``, documented in docs/report.md) and a ``RunSeries`` (per-step
values for plots). Everything is computed from event fields, never from the clock, so a report
of an old run reads the same every time. Kinds and fields this version does not know are
ignored, except an ``eval`` line's numbers and a step's ``lr``, which are picked up when there.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from remote.records.history import Recorded, RunHistory
from remote.records.series import RunSeries, StepRow, collect_steps
from trainer.events import (
    LOWER_IS_BETTER,
    MEASURE_AFTER_STEPS,
    EndEvent,
    RebalanceEvent,
    StartEvent,
)

SCHEMA_VERSION = 1
"""Version of the ``corral report --json`` object; bumped when a field is removed or renamed."""


@dataclass(frozen=True, kw_only=True)
class RankSummary:
    """One rank over the whole run."""

    rank: int
    host: str
    device: str
    """``cpu`` or the GPU's name."""
    mean_samples_per_s: float | None
    """Samples this rank processed / its total step time."""
    utilisation: float | None
    """Σ compute time / Σ step time: 1 = never waited for the others."""
    final_share: float | None
    """This rank's part of the global batch at the last step (0.5 = half)."""


@dataclass(frozen=True, kw_only=True)
class Move:
    """One balancer decision and what it gained."""

    step: int
    previous: list[int]
    split: list[int]
    reason: str
    policy: str
    predicted_gain: float
    """Predicted relative reduction of the slowest rank's compute time per step."""
    measured_gain: float | None
    """Measured over the ``MEASURE_AFTER_STEPS`` steps after it applied (None: too few)."""


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A metric's last and best value, and the step of each."""

    final: float
    final_step: int
    best: float
    best_step: int


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How the run ended, in words a user can act on."""

    state: str
    """``completed``, ``failed``, ``stopped`` (interrupted by ``corral stop``), ``running``..."""
    detail: str
    """The recorded reason (first failing host and rank, a stop), or empty."""
    failed_rank: int | None = None
    failed_host: str | None = None
    error: str | None = None
    """The first failing rank's own one-line error."""
    ended_at_step: int = 0


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """Everything ``corral report`` says about one run (``--json`` writes this object)."""

    schema: int = SCHEMA_VERSION
    run_id: str
    name: str
    cluster: str
    started: float
    """Unix time of the first launch."""
    outcome: Outcome
    hosts: list[str]
    ranks: list[RankSummary]
    model: str | None
    dataset: str | None
    policy: str | None
    global_batch: int | None
    total_steps: int | None
    steps_done: int
    """The last step that completed."""
    wall_s: float | None
    """From the first event to the last."""
    mean_samples_per_s: float | None
    """Σ samples / Σ step time over the run's steps (the cluster's real pace)."""
    p50_samples_per_s: float | None
    p95_samples_per_s: float | None
    """Percentiles of the per-step cluster throughput."""
    ideal_samples_per_s: float | None
    """Σ over ranks of each rank's solo rate (Σ its samples / Σ its compute time): the
    throughput with no rank ever waiting."""
    efficiency: float | None
    """``mean_samples_per_s / ideal_samples_per_s``."""
    moves: list[Move]
    loss: Metric | None
    """The global training loss."""
    eval: dict[str, Metric] = field(default_factory=dict)
    """Per eval metric (from ``eval`` events, when the run has any)."""
    final_lr: float | None = None
    restarts: int = 0
    lost_s: float = 0.0
    """Time lost to stops and restarts: the gaps before each relaunch plus redone steps."""


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _metric(points: list[tuple[int, float]], lower_is_better: bool = True) -> Metric | None:
    if not points:
        return None
    pick = min if lower_is_better else max
    best_step, best = pick(points, key=lambda p: p[1])
    return Metric(final=points[-1][1], final_step=points[-1][0], best=best, best_step=best_step)


def _moves(history: RunHistory, steps: dict[int, StepRow]) -> list[Move]:
    moves = []
    for line in history.lines:
        event = line.event
        if not isinstance(event, RebalanceEvent):
            continue
        window = [steps[s].max_compute_s for s in
                  range(event.step, event.step + MEASURE_AFTER_STEPS) if s in steps]
        measured = None
        if len(window) == MEASURE_AFTER_STEPS and event.times and max(event.times) > 0:
            measured = 1.0 - statistics.fmean(window) / max(event.times)
        moves.append(Move(step=event.step, previous=list(event.previous),
                          split=list(event.split), reason=event.reason, policy=event.policy,
                          predicted_gain=event.predicted_gain, measured_gain=measured))
    return moves


def _eval_metrics(points: dict[str, list[tuple[int, float]]]) -> dict[str, Metric]:
    metrics = {}
    for key, values in points.items():
        lower = any(word in key for word in LOWER_IS_BETTER)
        metric = _metric(values, lower_is_better=lower)
        if metric is not None:
            metrics[key] = metric
    return metrics


def _restarts(starts: list[StartEvent], rank0_steps: list[Recorded]) -> tuple[int, float]:
    """Relaunches after the first start, and the time they cost."""
    lost = 0.0
    for start in starts[1:]:
        before = [r for r in rank0_steps if r.t < start.t]
        if not before:
            continue
        last = before[-1]
        lost += max(0.0, start.t - last.t)
        reached = max(int(r.data.get("step", 0)) for r in before)
        redone = [r for r in rank0_steps
                  if r.t > start.t and int(r.data.get("step", 0)) <= reached]
        lost += sum(float(r.data.get("step_s", 0.0)) for r in redone)
    return max(0, len(starts) - 1), lost


def _ideal(steps: dict[int, StepRow]) -> float | None:
    """Σ ranks' solo rates: Σ samples / Σ compute time of each rank over the run."""
    samples: dict[int, int] = {}
    compute: dict[int, float] = {}
    for row in steps.values():
        for rank, cell in row.ranks.items():
            samples[rank] = samples.get(rank, 0) + cell.local_batch
            compute[rank] = compute.get(rank, 0.0) + cell.compute_s
    rates = [samples[r] / compute[r] for r in samples if compute[r] > 0]
    return sum(rates) if rates else None


def _outcome(history: RunHistory, steps_done: int) -> Outcome:
    ends = [line.event for line in history.lines if isinstance(line.event, EndEvent)]
    state = history.info.state
    if state not in ("completed", "failed", "stopped") and ends:
        last = {e.rank: e.status for e in ends}
        state = ("completed" if all(s == "completed" for s in last.values()) else
                 "failed" if "failed" in last.values() else "stopped")
    failed = next((line for line in history.lines if isinstance(line.event, EndEvent)
                   and line.event.status == "failed"), None)
    if failed is None or not isinstance(failed.event, EndEvent):
        return Outcome(state=state, detail=history.info.detail, ended_at_step=steps_done)
    return Outcome(state=state, detail=history.info.detail, failed_rank=failed.rank,
                   failed_host=failed.host, error=failed.event.error,
                   ended_at_step=steps_done)


def _rank_summaries(history: RunHistory, steps: dict[int, StepRow],
                    starts: dict[int, StartEvent]) -> list[RankSummary]:
    ranks = sorted({r for row in steps.values() for r in row.ranks} | set(starts))
    last = steps[max(steps)] if steps else None
    out = []
    for rank in ranks:
        cells = [row.ranks[rank] for row in steps.values() if rank in row.ranks]
        step_s = sum(c.step_s for c in cells)
        start = starts.get(rank)
        host = next((line.host for line in history.lines if line.rank == rank), "?")
        device = "?" if start is None else ("cpu" if start.device == "cpu"
                                            else start.device_name)
        batch = last.ranks[rank].local_batch if last and rank in last.ranks else None
        out.append(RankSummary(
            rank=rank, host=host, device=device,
            mean_samples_per_s=sum(c.local_batch for c in cells) / step_s if step_s else None,
            utilisation=sum(c.compute_s for c in cells) / step_s if step_s else None,
            final_share=batch / last.global_batch if batch is not None and last
            and last.global_batch else None,
        ))
    return out


def summarize(history: RunHistory) -> tuple[RunSummary, RunSeries]:
    """The run's summary and its per-step series."""
    lines = list(history.lines)
    starts_all = [line.event for line in lines
                  if isinstance(line.event, StartEvent) and line.rank == 0]
    starts = {line.rank: line.event for line in lines if isinstance(line.event, StartEvent)}
    steps = collect_steps(lines)
    series = RunSeries.from_steps(steps, lines)
    rank0_steps = [line for line in lines if line.kind == "step" and line.rank == 0]
    restarts, lost = _restarts(starts_all, rank0_steps)
    rates = [row.cluster_samples_per_s for row in steps.values() if row.cluster_samples_per_s]
    step_time = sum(row.step_s for row in steps.values())
    samples = sum(row.global_batch for row in steps.values())
    mean_rate = samples / step_time if step_time > 0 else None
    ideal = _ideal(steps)
    run_start: StartEvent | None = starts_all[0] if starts_all else starts.get(0)
    steps_done = max(steps) if steps else (run_start.step if run_start else 0)
    lrs = [row.lr for row in steps.values() if row.lr is not None]
    info = history.info
    summary = RunSummary(
        run_id=info.run_id, name=info.name, cluster=info.cluster, started=info.started,
        outcome=_outcome(history, steps_done), hosts=list(info.hosts),
        ranks=_rank_summaries(history, steps, starts),
        model=run_start.model if run_start else None,
        dataset=run_start.dataset if run_start else None,
        policy=run_start.policy if run_start else None,
        global_batch=run_start.global_batch if run_start else None,
        total_steps=run_start.total_steps if run_start else None, steps_done=steps_done,
        wall_s=(lines[-1].t - lines[0].t) if len(lines) > 1 else None,
        mean_samples_per_s=mean_rate, p50_samples_per_s=_percentile(rates, 50),
        p95_samples_per_s=_percentile(rates, 95), ideal_samples_per_s=ideal,
        efficiency=mean_rate / ideal if mean_rate and ideal else None,
        moves=_moves(history, steps),
        loss=_metric([(s, row.loss) for s, row in steps.items() if row.loss is not None]),
        eval=_eval_metrics(series.eval), final_lr=lrs[-1] if lrs else None,
        restarts=restarts, lost_s=lost,
    )
    return summary, series


def summary_to_json(summary: RunSummary) -> dict[str, Any]:
    """The ``--json`` object of one run (plain JSON types only)."""
    from dataclasses import asdict

    return asdict(summary)
