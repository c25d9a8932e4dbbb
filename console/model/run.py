"""The run model: the state of one run as its events arrive, pure Python, built only from
``RunEvent``s — the one reducer of the event stream.

Every figure (throughput, ideal, efficiency, utilisation, loss, balancer gains, durations) is
the one reducer's (``figures.RunFigures``, the same ``corral report`` reads): while a
run goes the panels show its latest step, once it has ended its whole-run figures.

Both renderers read it and never look at the state in events themselves: the Textual console (a
worker feeds every event into ``RunModel.apply``, cheap, no rendering, and the app redraws the
panels from the model on a timer, so a flood of per-rank metrics costs one redraw per tick, not
one per event) and the plain-terminal follower (``console.follow``). Nothing here knows about
Textual or rich, so the numbers both show are tested on their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from console.model.log_lines import LogPlaces
from console.model.pace import RunPace
from console.model.records import HostInfo, LogEntry, RankRow, RowView, ThroughputPoint
from console.model.rows import DEAD_HOST_STATES, panel_rows
from figures import Move, RunFigures
from remote.api import FINAL_RUN_STATES, HostStatus, LogLine, RankEvent, RunStatus
from trainer.events import (
    CapacityEvent,
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    MembershipEvent,
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
)

if TYPE_CHECKING:
    from remote.api import CheckReport, HostVerdict, PairLink, RunEvent

HISTORY_POINTS = 600
"""Cluster throughput points kept for the chart."""
LOG_LINES = 5000
"""Log lines kept in memory (older ones are dropped)."""
ETA_WINDOW = 20
"""Recent steps whose pace gives the ETA."""


class RunModel(RunPace):
    """The console's view of one cluster and its current run, updated by ``apply``."""

    def __init__(
        self, *, cluster_name: str, hosts: Sequence[str], policy: str,
        total_steps: int | None = None, global_batch: int | None = None,
    ) -> None:
        self.cluster_name = cluster_name
        self.host_order: list[str] = list(hosts)
        self.next_policy = policy
        """Balancing policy the next start uses (``p`` changes it)."""
        self.logs: deque[LogEntry] = deque(maxlen=LOG_LINES)
        self.logs_total = 0
        """Log lines ever added (a widget compares it with what it has shown)."""
        self.logs_edited = 0
        """Kept lines changed in place (a bar's new state, a line another rank said too): a
        widget that sees it move shows the buffer anew."""
        self._log_places = LogPlaces()
        self.version = 0
        """Bumped on every change: the panels redraw only when it moved."""
        self._config_total_steps = total_steps
        self._config_global_batch = global_batch
        self.reset_run(None)

    @classmethod
    def of_run(cls, run_id: str) -> RunModel:
        """A model of ``run_id`` alone, with no cluster file behind it (the headless follower:
        hosts and sizes come from the run's events)."""
        model = cls(cluster_name="", hosts=(), policy="")
        model.reset_run(run_id)
        return model

    # ---------------------------------------------------------------- run lifecycle
    def reset_run(self, run_id: str | None, *, t: float | None = None, name: str = "") -> None:
        """Forget the previous run's numbers (logs are kept) before following ``run_id``."""
        self.run_id = run_id
        self.run_name = name
        """The run's name (``[run] name``, ``corral run --name``); empty when it has none."""
        self.state = "idle" if run_id is None else "checking"
        self.state_detail = ""
        self.failed_host: str | None = None
        self.failed_rank: int | None = None
        self.check_report: CheckReport | None = None
        self.links: tuple[PairLink, ...] = ()
        """Every direction between two hosts as the run's check measured them (none yet)."""
        self.estimate: tuple[HostVerdict, ...] = ()
        """The run's check's estimate per host: who pays for its exchange, who sits out."""
        self.active_changes: list[RebalanceEvent] = []
        """The balancer's changes of active set (a rank sat out or rejoined) that carry its
        cost model's figures, oldest first: a host benched again by an undo (no figures) keeps
        those of the change that benched it."""
        self.started_t: float | None = None
        """Time of the run's first event (an attached run counts from its real start)."""
        self.finished_t: float | None = None
        self.recorded_wall_s: float | None = None
        """The ended run's wall time as its record holds it (the final status says it)."""
        self.hosts: dict[str, HostInfo] = {name: HostInfo() for name in self.host_order}
        self.ranks: dict[int, RankRow] = {}
        self.world_size: int | None = None
        self.global_batch = self._config_global_batch
        self.total_steps = self._config_total_steps
        self.steps_per_epoch: int | None = None
        self.step = 0
        self.first_step: int | None = None
        self.epoch = 0
        self.loss: float | None = None
        self.split: tuple[int, ...] = ()
        self.policy: str | None = None
        self.capacity: tuple[float | None, ...] = ()
        self.capacity_source = ""
        self.checkpoint: str | None = None
        self.evals: list[EvalEvent] = []  # rank 0's, oldest first (the header shows the trend)
        self.history: deque[ThroughputPoint] = deque(maxlen=HISTORY_POINTS)
        self._step_times: deque[tuple[int, float]] = deque(maxlen=ETA_WINDOW)
        self._row_views_cache: tuple[int, list[RowView]] | None = None
        self._ranks_cache: list[RankRow] | None = None
        self._in_run_cache: tuple[int, list[RankRow]] | None = None
        self.figures = RunFigures()
        """The run's figures, reduced from its events: what the panels show once it ended."""
        self._moves_cache: tuple[int, list[Move]] = (-1, [])
        self._changes_cache: tuple[int, list[Move | MembershipEvent]] = (-1, [])
        self._split_after: int | None = None
        """After a change of membership: the split is read from the first later step every
        member reported (the trainer's new split; no rebalance event says it)."""
        if run_id is not None:
            self.add_log("corral", f"following run {run_id}", t=t or 0.0)
        self.version += 1

    def add_log(self, source: str, text: str, *, t: float, level: str = "info",
                noise: bool = False) -> None:
        """Append one line to the logs buffer."""
        self.logs.append(LogEntry(t=t, source=source, text=text, level=level, noise=noise))
        self.logs_total += 1
        self.version += 1

    def _add_output(self, event: LogLine) -> None:
        """A rank's or launcher's line: appended, or in place of the entry it updates (its
        bar's earlier state; the same line of another rank: the entry then names them all)."""
        placed = self._log_places.place(event, self.logs_total)
        start = self.logs_total - len(self.logs)
        if placed.entry is None or placed.entry < start:
            self.logs.append(LogEntry(t=event.t, source=placed.source, text=event.text,
                                      noise=event.noise))
            self.logs_total += 1
            return
        entry = self.logs[placed.entry - start]
        text = event.text if event.bar else entry.text
        self.logs[placed.entry - start] = LogEntry(t=entry.t, source=placed.source, text=text,
                                                   noise=event.noise)
        self.logs_edited += 1

    # ---------------------------------------------------------------- events
    def apply_all(self, events: Iterable[RunEvent]) -> None:
        """Apply several events in order (a burst of a flood: its lines added in one pass,
        the version moved once by their count)."""
        lines = 0
        for event in events:
            if type(event) is LogLine:
                self._add_output(event)
                lines += 1
            else:
                self.apply(event)
        self.version += lines

    def apply(self, event: RunEvent) -> None:
        """Absorb one event of the run's stream."""
        if isinstance(event, RankEvent):
            self._apply_rank_event(event)
        elif isinstance(event, LogLine):
            self._add_output(event)
        elif isinstance(event, HostStatus):
            self._apply_host_status(event)
        elif isinstance(event, RunStatus):
            self._apply_run_status(event)
        self.version += 1

    def _apply_host_status(self, event: HostStatus) -> None:
        if self.started_t is None:
            self.started_t = event.t
        if event.host not in self.hosts:
            self.host_order.append(event.host)
        self.hosts[event.host] = HostInfo(state=event.state, detail=event.detail)
        dead = event.state in DEAD_HOST_STATES
        text = f"{event.state}: {event.detail}" if event.detail else event.state
        self.add_log(f"{event.host}:corral", text, t=event.t, level="error" if dead else "info")

    def _apply_run_status(self, event: RunStatus) -> None:
        if self.run_id is None or event.run_id != self.run_id:
            self.run_id = event.run_id
        if self.started_t is None:
            self.started_t = event.t
        self.state = event.state
        self.state_detail = event.detail
        if event.report is not None:
            self.check_report = event.report
            self.links, self.estimate = event.report.links, event.report.estimate
        if event.links:
            self.links, self.estimate = event.links, event.estimate
        if event.state in FINAL_RUN_STATES:
            self.finished_t, self.recorded_wall_s = event.t, event.wall_s
            self._show_run_averages()
        if event.state == "failed":
            self.failed_host, self.failed_rank = event.failed_host, event.failed_rank
            row = self.ranks.get(event.failed_rank) if event.failed_rank is not None else None
            if row is not None and not row.reason:
                row.reason = event.detail
        text = f"run {event.run_id} {event.state}" + (f": {event.detail}" if event.detail else "")
        level = {"failed": "error", "stopped": "warning"}.get(event.state, "info")
        self.add_log("corral", text, t=event.t, level=level)

    def _show_run_averages(self) -> None:
        """The run ended: each rank's row shows its averages, not its last step."""
        for rank, row in self.ranks.items():
            sums = self.figures.ranks.get(rank)
            if sums is not None and sums.steps:
                if self.plain_script:  # no split: its last step's batch is an epoch's tail
                    row.local_batch = round(sums.samples / sums.steps)
                row.samples_per_s = sums.mean_samples_per_s
                row.compute_s, row.step_s = sums.mean_compute_s, sums.mean_step_s
                row.tokens = sums.mean_tokens_per_step
            if sums is not None and sums.gpu_util is not None:
                row.gpu_util = sums.gpu_util

    @property
    def plain_script(self) -> bool:
        """The run is a script's without corral's opt-in: no loss, no balancing, no total."""
        start = self.figures.first_start
        return start is not None and start.plain_script

    @property
    def decisions(self) -> list[Move]:
        """The balancer's decisions, oldest first, each with its measured gain once known."""
        if self._moves_cache[0] != self.figures.version:
            self._moves_cache = (self.figures.version, self.figures.moves())
        return self._moves_cache[1]

    @property
    def changes(self) -> list[Move | MembershipEvent]:
        """Every decision that changed the run: the balancer's moves and each leave, join or
        lost host, in the order they took effect (``RunFigures.changes``)."""
        if self._changes_cache[0] != self.figures.version:
            self._changes_cache = (self.figures.version, self.figures.changes())
        return self._changes_cache[1]

    def member(self, index: int) -> int:
        """The event rank of the run's rank ``index`` now (a joiner's is a new id)."""
        members = self.figures.members
        return members[index] if index < len(members) else index

    def _row(self, rank: int, host: str) -> RankRow:
        row = self.ranks.get(rank)
        if row is None:
            row = self.ranks[rank] = RankRow(rank=rank, host=host)
            self._row_views_cache = None
            if host not in self.hosts:
                self.host_order.append(host)
                self.hosts[host] = HostInfo()
        return row

    def _apply_rank_event(self, wrapped: RankEvent) -> None:
        row = self._row(wrapped.event.rank, wrapped.host)
        event = self.figures.observe(wrapped.event, wrapped.host)  # its step as counted
        settled = self.figures.newly_settled  # the cluster's pace of a step whose samples are known
        if settled is not None and settled.samples_per_s is not None:
            self.history.append(ThroughputPoint(step=settled.step, t=settled.t,
                                                samples_per_s=settled.samples_per_s,
                                                ideal=self._live_ideal()))
        if isinstance(event, StepEvent):
            self._apply_step(row, event)
        elif isinstance(event, ResourceEvent):
            row.gpu_util, row.gpu_mem_used = event.gpu_util, event.gpu_mem_used
            row.gpu_mem_total, row.cpu_percent = event.gpu_mem_total, event.cpu_percent
            row.rss_bytes = event.rss_bytes
            sums = self.figures.ranks[event.rank]  # the peaks as the report defines them
            row.gpu_peak_allocated = sums.gpu_peak_allocated
            row.gpu_peak_reserved = sums.gpu_peak_reserved
        elif isinstance(event, StartEvent):
            self._apply_start(row, event)
        elif isinstance(event, RebalanceEvent):
            self.split, self.policy = event.split, event.policy
            if event.compute_s is not None:
                self.active_changes.append(event)
        elif isinstance(event, MembershipEvent):
            self._apply_membership(event)
        elif isinstance(event, CapacityEvent):
            self.capacity, self.capacity_source = event.samples_per_s, event.source
        elif isinstance(event, EvalEvent):
            self.evals.append(event)
        elif isinstance(event, CheckpointEvent):
            self.checkpoint = event.path
            self.add_log(f"{wrapped.host}:{event.rank}", f"checkpoint at step {event.step}: "
                         f"{event.path}", t=event.t)
        elif isinstance(event, EndEvent):
            row.end_status = event.status
            row.step = max(row.step, event.step)
            if event.error:
                row.reason = event.error
            if event.status == "failed":
                self.add_log(f"{wrapped.host}:{event.rank}", f"failed: {event.error or '?'}",
                             t=event.t, level="error")

    def _apply_membership(self, event: MembershipEvent) -> None:
        """Hosts left or joined (rank 0's event, in the record: every seat sees it)."""
        if event.change == "refused":
            return
        for host in event.hosts:
            if host not in self.hosts:
                self.host_order.append(host)
            state = "left" if event.change == "left" else "running"
            self.hosts[host] = HostInfo(state=state, detail=event.host_detail())
        self.world_size, self._split_after = event.world_size, event.step
        self._row_views_cache = None

    def _apply_start(self, row: RankRow, event: StartEvent) -> None:
        row.device = "CPU" if event.device == "cpu" else event.device_name
        if event.precision != "fp32":  # per rank, as devices differ in what they can do
            row.device = f"{event.precision} {row.device}"
        row.backend = event.backend
        row.step, row.end_status, row.reason = event.step, None, ""
        if event.rank < len(event.split):
            row.local_batch = event.split[event.rank]
        self.world_size, self.global_batch = event.world_size, event.global_batch
        self.total_steps, self.steps_per_epoch = event.total_steps, event.steps_per_epoch
        self.split, self.policy = event.split, event.policy
        if self.first_step is None or event.step < self.first_step:
            self.first_step = event.step
        self.step = max(self.step, event.step)

    def _apply_step(self, row: RankRow, event: StepEvent) -> None:
        row.step, row.local_batch, row.loss = event.step, event.local_batch, event.loss
        row.compute_s, row.step_s, row.tokens = event.compute_s, event.step_s, event.tokens
        step_row = self.figures.rows[event.step]  # the reducer has the event already
        row.samples_per_s = step_row.cells[event.rank].samples_per_s
        row.history.append(row.samples_per_s or 0.0)
        after = self._split_after
        members = self.figures.members
        if after is not None and event.step > after and all(m in step_row.cells
                                                            for m in members):
            self.split = tuple(step_row.cells[m].local_batch for m in members)
            self._split_after = None
        if event.rank != 0:
            return
        # Rank 0 speaks for the cluster: progress, loss, ETA (throughput: once settled).
        self.step, self.epoch = event.step, event.epoch
        self.loss = step_row.loss
        self._step_times.append((event.step, event.t))

    def sorted_ranks(self) -> list[RankRow]:
        """Every rank known, in rank order."""
        if self._ranks_cache is None or len(self._ranks_cache) != len(self.ranks):
            self._ranks_cache = [row for _, row in sorted(self.ranks.items())]
        return self._ranks_cache

    def ranks_in_run(self) -> list[RankRow]:
        """The ranks in the run now, in rank order: every rank known less those that left (a
        host that left, or the old rank of one that joined again)."""
        if self._in_run_cache is None or self._in_run_cache[0] != self.version:
            rows = [row for row in self.sorted_ranks() if row.end_status != "left"
                    and self.hosts.get(row.host, HostInfo()).state != "left"]
            self._in_run_cache = (self.version, rows)
        return self._in_run_cache[1]

    @property
    def shares_tokens(self) -> bool:
        """The run shares tokens (variable-length items): its ranks report tokens per step."""
        return any(row.tokens is not None for row in self.ranks.values())

    def rank_and_host_rows(self) -> list[RowView]:
        """The hosts panel's rows: every rank in rank order, then hosts with no rank yet."""
        if self._row_views_cache is not None and self._row_views_cache[0] == self.version:
            return self._row_views_cache[1]
        views = panel_rows(self, self.sorted_ranks(), self.host_order)
        self._row_views_cache = (self.version, views)
        return views
