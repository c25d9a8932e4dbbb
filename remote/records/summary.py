"""One run's numbers, reduced from its recorded events: what ``corral report`` shows.

``summarize(history)`` turns a ``RunHistory`` into a frozen ``RunSummary`` (JSON-ready, the
schema of ``corral report --json``, documented in docs/report.md) and a ``RunSeries`` (per-step
values for plots). Every figure is the reducer's (``figures.reducer.RunFigures``, the
definitions in ``figures.metrics``), the same the console shows: computed from event
fields, never from the clock, so a report of an old run reads the same every time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from figures.metrics import Metric, Move, percentile
from figures.reducer import RunFigures
from figures.series import RunSeries
from figures.solo import SoloBaseline, run_baseline
from remote.records.history import RunHistory, rank_tail
from remote.records.runs import unfollowed
from trainer.events import EndEvent

RECORDED_CULPRIT = re.compile(r"^(?P<host>\S+) rank (?P<rank>\d+)\b")
"""How a failed run's recorded detail starts when the follower named the culprit rank."""

__all__ = ["SCHEMA_VERSION", "Metric", "Move", "Outcome", "RankSummary", "RunSummary",
           "summarize", "summary_to_json"]

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
    tokens_per_step: float | None = None
    """Mean input tokens per step, when the run shares tokens (variable-length items)."""
    gpu_util: float | None = None
    """Mean GPU (SM) utilisation over its resource samples, percent (None: no GPU or NVML)."""
    gpu_peak_allocated: int | None = None
    """The most bytes its tensors held on its GPU (None on CPU)."""
    gpu_peak_reserved: int | None = None
    """The most bytes torch's caching allocator reserved on its GPU for it."""
    state_bytes: int | None = None
    """Bytes of training state it held: parameters, gradients, its optimizer state."""
    state_budget: int | None = None
    """Bytes of memory it could give to training state."""


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
    last_lines: list[str] = field(default_factory=list)
    """The first failing rank's last output lines (its traceback, what it printed after)."""
    collateral: list[str] = field(default_factory=list)
    """``rank N on HOST: error`` of every other rank that ended failed: consequences of the
    culprit's failure (a peer's connection closed, a timeout); of a stopped run without one,
    the ranks that failed as the stop ended their peers."""
    cleanup: str = ""
    """What is known of the run's processes left on its hosts (``RunInfo.cleanup``) while a
    host may still hold some (``suspect_hosts``), or empty."""


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One generation of the trained model (``samples`` event)."""

    prompt: str
    output: str


@dataclass(frozen=True, kw_only=True)
class GenerationRow:
    """One change of the run's membership (a ``membership`` event, trainer/events/membership.py)."""

    generation: int
    step: int
    change: str
    hosts: list[str]
    cause: str | None
    world_size: int
    redone_steps: int
    state_bytes: int
    seconds_to_step: float | None
    phases: dict[str, float]
    """A join's seconds by phase (check, push, start, admission); empty otherwise."""
    reason: str | None
    """What was seen, in one line: a refused join's fix, or what a lost host's ranks said as
    they ended (``disk full on HOST at PATH: …``); None where nothing was said."""


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
    """From the launch to the recorded outcome (a run still running, or recorded before
    outcomes had a time: from its first event to its last)."""
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
    outside_compute: float | None = None
    """The part of the steps' time outside the slowest rank's compute (all-reduce, optimizer,
    fixed per-step work); from ``FIXED_COST_DOMINATES`` up it explains a low efficiency."""
    samples: list[Sample] = field(default_factory=list)
    """Greedy generations from held-out prompts at the end of the run (language models)."""
    host_ranks: dict[str, list[int]] = field(default_factory=dict)
    """Per host: its global ranks as the launch planned them (empty: not recorded)."""
    no_events: bool = False
    """No start event was copied here (a ``--detach`` run nobody attached to, or a script that
    ended before its first optimizer step): its report comes from corral's own record (hosts,
    ranks, time, outcome)."""
    exchange: str = "exact"
    """``exact``, or ``local``: APPROXIMATE rounds between islands (docs/lowcomm.md)."""
    rounds: RoundFacts | None = None
    """``local``: the newest round's exchange and length."""
    plain_script: bool = False
    """A script run without corral's opt-in: no global batch declared, no loss read, nothing
    balanced."""
    generations: list[GenerationRow] = field(default_factory=list)
    """Each live join, leave or refused join, in order (empty: the hosts never changed)."""
    baseline: SoloBaseline | None = None
    """The run against its hosts alone: % of Σ solo, × fastest host, each host's solo
    samples/s and where it came from (``figures/solo.py``); None for a run with no steps."""


@dataclass(frozen=True, kw_only=True)
class RoundFacts:
    """A local run's newest round (trainer/events/round.py)."""

    bytes_per_sample: float
    """Bytes each island leader sent per sample trained."""
    inner_steps: list[int]
    """Each island's inner steps."""
    round_s: float
    exchange_s: float
    """The exchange's time left exposed at the round's end."""
    compression: str = "none"
    """``outer_compression`` of the run's exchange."""
    overlap: bool = False
    """``outer_overlap``: the exchange ran behind the next round."""
    islands: str = ""
    """Live membership: the round's islands (``RoundEvent.islands_text``); "" without it."""


def _outcome(history: RunHistory, steps_done: int) -> Outcome:
    ends = [line.event for line in history.lines if isinstance(line.event, EndEvent)]
    state = history.info.state
    detail = history.info.detail
    if unfollowed(history.info) and not detail and not ends:
        detail = (f"not followed since launch: `corral attach {history.info.run_id}` follows "
                  "it and reads its end")
    if state not in ("completed", "failed", "stopped") and ends:
        last = {e.rank: e.status for e in ends}
        state = ("completed" if all(s == "completed" for s in last.values()) else
                 "failed" if "failed" in last.values() else "stopped")
    failures = [line for line in history.lines if isinstance(line.event, EndEvent)
                and line.event.status == "failed"]
    stopping = _stopped_failures(state, ends, failures)
    failures = [line for line in failures if line not in stopping]
    cleanup = history.info.cleanup if history.info.suspect_hosts else ""
    culprit = _recorded_culprit(history) if state == "failed" else None
    if culprit is None and failures:
        culprit = (failures[0].host, failures[0].rank)
    if culprit is None:
        return Outcome(state=state, detail=detail, ended_at_step=steps_done, cleanup=cleanup,
                       collateral=[f"rank {line.rank} on {line.host}: {line.event.error or '?'}"
                                   for line in stopping if isinstance(line.event, EndEvent)])
    host, rank = culprit
    own = next((line.event for line in failures if (line.host, line.rank) == culprit), None)
    error = own.error if isinstance(own, EndEvent) else detail.split("\n")[0] or None
    return Outcome(state=state, detail=detail, cleanup=cleanup, failed_rank=rank,
                   failed_host=host, error=error, ended_at_step=steps_done,
                   last_lines=rank_tail(history.run_dir, host, rank),
                   collateral=[f"rank {line.rank} on {line.host}: {line.event.error or '?'}"
                               for line in failures if (line.host, line.rank) != culprit
                               and isinstance(line.event, EndEvent)])


def _stopped_failures(state: str, ends: list[EndEvent], failures: list[Any]) -> list[Any]:
    """Of a stopped run's ``failures`` (its ranks' ``failed`` ends), those that came once the
    stop had reached a rank (its ``interrupted`` end): a peer's collective failing as that rank
    ended (a connection closed) followed from the stop; no failure of the run's own."""
    stopped_at = min((e.t for e in ends if e.status == "interrupted"), default=None)
    if state != "stopped" or stopped_at is None:
        return []
    return [line for line in failures if line.event.t >= stopped_at]


def _recorded_culprit(history: RunHistory) -> tuple[str, int] | None:
    """The host and rank the follower recorded as failing first for a reason of its own
    (``remote.run.monitor`` writes its detail as ``HOST rank N ...``), when it named one."""
    found = RECORDED_CULPRIT.match(history.info.detail)
    if found is None or found["host"] not in (*history.info.hosts, *history.info.left_hosts):
        return None
    return found["host"], int(found["rank"])


def _rank_summaries(figures: RunFigures) -> list[RankSummary]:
    return [RankSummary(rank=rank.rank, host=rank.host, device=rank.device,
                        mean_samples_per_s=rank.mean_samples_per_s,
                        utilisation=rank.utilisation, final_share=figures.final_share(rank.rank),
                        tokens_per_step=rank.mean_tokens_per_step, gpu_util=rank.gpu_util,
                        gpu_peak_allocated=rank.gpu_peak_allocated,
                        gpu_peak_reserved=rank.gpu_peak_reserved,
                        state_bytes=rank.state_bytes, state_budget=rank.state_budget)
            for _, rank in sorted(figures.ranks.items())]


def summarize(history: RunHistory) -> tuple[RunSummary, RunSeries]:
    """The run's summary and its per-step series."""
    figures = RunFigures()
    for line in history.lines:
        figures.observe(line.event, line.host)
    return summary_of(history, figures), RunSeries.of(figures)


def summary_of(history: RunHistory, figures: RunFigures) -> RunSummary:
    """The summary of ``history`` whose events ``figures`` has reduced."""
    start = figures.first_start
    rates = figures.step_rates()
    info = history.info
    return RunSummary(
        run_id=info.run_id, name=info.name, cluster=info.cluster, started=info.started,
        outcome=_outcome(history, figures.steps_done), hosts=list(info.hosts),
        ranks=_rank_summaries(figures),
        model=start.model if start else None, dataset=start.dataset if start else None,
        policy=start.policy if start else None,
        global_batch=start.global_batch if start else None,
        total_steps=start.total_steps if start else None, steps_done=figures.steps_done,
        wall_s=info.wall_s or figures.wall_s,
        mean_samples_per_s=figures.mean_samples_per_s,
        p50_samples_per_s=percentile(rates, 50), p95_samples_per_s=percentile(rates, 95),
        ideal_samples_per_s=figures.ideal_samples_per_s, efficiency=figures.efficiency,
        moves=figures.moves(), loss=figures.loss, eval=figures.eval_metrics(),
        final_lr=figures.final_lr, restarts=figures.restarts, lost_s=figures.lost_s,
        outside_compute=figures.outside_compute_fraction,
        samples=[Sample(prompt=p, output=o) for p, o in zip(
            figures.samples.prompts, figures.samples.outputs, strict=False)]
        if figures.samples else [],
        host_ranks=dict(info.ranks or {}), no_events=start is None,
        exchange=start.exchange if start else "exact", rounds=_round_facts(figures),
        plain_script=start is not None and start.plain_script,
        generations=[GenerationRow(generation=g.generation, step=g.step, change=g.change,
                                hosts=list(g.hosts), cause=g.cause, world_size=g.world_size,
                                redone_steps=g.redone_steps, state_bytes=g.state_bytes,
                                seconds_to_step=g.seconds_to_step, phases=dict(g.phases),
                                reason=g.reason or g.said)
                     for g in figures.generations],
        baseline=run_baseline(figures, live=False) if figures.has_steps else None,
    )


def _round_facts(figures: RunFigures) -> RoundFacts | None:
    last = figures.last_round
    if last is None:
        return None
    return RoundFacts(bytes_per_sample=last.bytes_per_sample, inner_steps=list(last.inner_steps),
                      round_s=last.round_s, exchange_s=last.exchange_s,
                      compression=last.compression, overlap=last.overlap,
                      islands=last.islands_text())


def summary_to_json(summary: RunSummary) -> dict[str, Any]:
    """The ``--json`` object of one run (plain JSON types only)."""
    from dataclasses import asdict

    return asdict(summary)
