"""Follow a run in a plain terminal with rich (``corral run``, ``corral attach --headless``).

On a terminal: a live block with the progress (step/total, ETA, loss, cluster samples/s) and a
per-rank table, with notable events (host states, rebalances, failures, rank output) printed
above it as they happen. Without a terminal (CI, a pipe): the same notable events as plain
lines, a progress line every twentieth of the run, and the per-rank table once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from remote.api import (
    FINAL_RUN_STATES,
    CheckReport,
    HostStatus,
    LogLine,
    RankEvent,
    RunEvent,
    RunHandle,
    RunStatus,
)
from remote.profile_all import HostProfile
from remote.runs import RunInfo
from trainer.events import EndEvent, RebalanceEvent, StartEvent, StepEvent


@dataclass(kw_only=True)
class RankRow:
    """What the per-rank table shows for one rank."""

    host: str
    rank: int
    device: str = "?"
    local_batch: int | None = None
    samples_per_s: float | None = None
    compute_share: float | None = None
    """``compute_s / step_s`` of the rank's last step: near 1 = busy, low = waiting for others."""
    status: str = "started"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunView:
    """The follower's state, built from the run's events; ``update`` returns lines to print."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.state = "starting"
        self.final: RunStatus | None = None
        self.ranks: dict[int, RankRow] = {}
        self.step = 0
        self.total_steps: int | None = None
        self.loss: float | None = None
        self.cluster_samples_per_s: float | None = None
        self._first_step: tuple[int, float] | None = None
        self._last_t: float | None = None
        self._last_progress_step = 0

    # ---- derived values -------------------------------------------------------------------

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace of the steps seen so far (event timestamps)."""
        if self._first_step is None or self._last_t is None or self.total_steps is None:
            return None
        first_step, first_t = self._first_step
        done = self.step - first_step
        if done <= 0:
            return None
        return (self._last_t - first_t) / done * max(0, self.total_steps - self.step)

    def progress_text(self) -> str:
        """``step 40/200 (20%) · ETA 1:12 · loss 1.234 · 512 samples/s``."""
        parts = [f"step {self.step}/{self.total_steps or '?'}"]
        if self.total_steps:
            parts[0] += f" ({100 * self.step // self.total_steps}%)"
        eta = self.eta_s
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.cluster_samples_per_s is not None:
            parts.append(f"{self.cluster_samples_per_s:.0f} samples/s")
        return " · ".join(parts)

    def progress_due(self) -> bool:
        """True every twentieth of the run (and at its last step): when plain mode prints."""
        if self.total_steps is None or self.step <= self._last_progress_step:
            return False
        every = max(1, self.total_steps // 20)
        due = self.step % every == 0 or self.step >= self.total_steps
        if due:
            self._last_progress_step = self.step
        return due

    # ---- events -----------------------------------------------------------------------------

    def update(self, event: RunEvent) -> list[str]:
        """Apply ``event``; the notable lines it produces (empty for routine ones)."""
        if isinstance(event, RankEvent):
            return self._rank_event(event)
        if isinstance(event, HostStatus):
            for row in self.ranks.values():
                if row.host == event.host and event.state in ("failed", "unreachable", "stopped"):
                    row.status = event.state
            detail = f": {event.detail}" if event.detail else ""
            return [f"{event.host}: {event.state}{detail}"]
        if isinstance(event, LogLine):
            where = event.host if event.rank is None else f"{event.host}:{event.rank}"
            return [f"{where} | {event.text}"]
        self.state = event.state
        if event.state in FINAL_RUN_STATES:
            self.final = event
        return [self._status_line(event)]

    def _status_line(self, event: RunStatus) -> str:
        line = f"run {event.run_id}: {event.state}"
        if event.state == "failed" and event.failed_host is not None:
            rank = f" rank {event.failed_rank}" if event.failed_rank is not None else ""
            line += f" (first failure: {event.failed_host}{rank})"
        return line + (f": {event.detail}" if event.detail else "")

    def _rank_event(self, wrapped: RankEvent) -> list[str]:
        event = wrapped.event
        row = self.ranks.get(event.rank)
        if row is None:
            row = self.ranks[event.rank] = RankRow(host=wrapped.host, rank=event.rank)
        if isinstance(event, StartEvent):
            gpu = event.device != "cpu"
            row.device = f"{event.device} {event.device_name}" if gpu else event.device
            row.local_batch = event.split[event.rank] if event.rank < len(event.split) else None
            row.status = "started"
            self.total_steps = event.total_steps
            self.step = max(self.step, event.step)
        elif isinstance(event, StepEvent):
            row.local_batch = event.local_batch
            row.samples_per_s = event.samples_per_s
            row.compute_share = event.compute_s / event.step_s if event.step_s > 0 else None
            row.status = "running"
            if event.rank == 0:
                self._rank0_step(event)
        elif isinstance(event, RebalanceEvent):
            gain = f"{event.predicted_gain:+.0%}"
            return [f"step {event.step}: rebalance {list(event.previous)} -> {list(event.split)}"
                    f" ({event.policy}, predicted {gain}: {event.reason})"]
        elif isinstance(event, EndEvent):
            row.status = event.status
            if event.status != "completed":
                return [f"{wrapped.host}:{event.rank} ended {event.status} at step {event.step}"
                        + (f": {event.error}" if event.error else "")]
        return []

    def _rank0_step(self, event: StepEvent) -> None:
        self.step = event.step
        if self._first_step is None:
            self._first_step = (event.step, event.t)
        self._last_t = event.t
        self.loss = event.global_loss if event.global_loss is not None else event.loss
        self.cluster_samples_per_s = event.cluster_samples_per_s

    # ---- rendering ----------------------------------------------------------------------------

    def rank_table(self) -> Table:
        """The per-rank table: host, rank, device, local batch, samples/s, compute share, status."""
        table = Table(title=f"run {self.run_id}", title_justify="left")
        for name in ("host", "rank", "device", "local batch", "samples/s", "compute share",
                     "status"):
            table.add_column(name, justify="right" if name in ("rank", "local batch",
                                                             "samples/s", "compute share")
                             else "left")
        for row in sorted(self.ranks.values(), key=lambda r: r.rank):
            table.add_row(
                row.host, str(row.rank), row.device,
                "-" if row.local_batch is None else str(row.local_batch),
                "-" if row.samples_per_s is None else f"{row.samples_per_s:.1f}",
                "-" if row.compute_share is None else f"{row.compute_share:.0%}",
                row.status,
            )
        return table

    def renderable(self) -> RenderableType:
        """The live block: state and progress over the per-rank table."""
        header = Text(f"{self.state} · {self.progress_text()}", style="bold")
        return Group(header, self.rank_table())

    def exit_code(self) -> int:
        """0 only for a run that completed."""
        return 0 if self.final is not None and self.final.state == "completed" else 1


def check_table(report: CheckReport) -> Table:
    """A pre-flight report as a table: host, check, result, detail and the fix for failures."""
    table = Table(title="corral check", title_justify="left")
    # The fix column only when there is something to fix or to warn about.
    with_fix = any(item.hint for item in report.items)
    for name in ("host", "check", "result", "detail", "fix")[: 5 if with_fix else 4]:
        table.add_column(name, overflow="fold")
    for item in report.items:
        warning = item.ok and item.detail.startswith("warning")
        result = "[yellow]warn[/]" if warning else "[green]ok[/]" if item.ok else "[red]FAIL[/]"
        cells: list[str | Text] = [item.host, item.name, result, Text(item.detail),
                                   Text(item.hint)]
        table.add_row(*cells[: 5 if with_fix else 4])
    return table


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """``corral status``: one row per recorded run, newest first."""
    table = Table(title="runs", title_justify="left")
    named = any(run.name for run in runs)
    for name in ("run", "name", "state", "started (UTC)", "hosts"):  # a run id is copied whole
        if name != "name" or named:
            table.add_column(name, no_wrap=True)
    table.add_column("detail", overflow="fold", min_width=12)
    for run in runs:
        started = time.strftime("%m-%d %H:%M:%S", time.gmtime(run.started))
        style = "green" if run.state == "completed" else "red" if run.state == "failed" else ""
        cells: list[str | Text] = [run.run_id, Text(run.name)] if named else [run.run_id]
        detail = run.detail + (f"\ncleanup: {run.cleanup}" if run.cleanup else "")
        table.add_row(*cells, Text(run.state, style=style), started, str(len(run.hosts)),
                      Text(detail))
    return table


def profiles_table(results: Sequence[HostProfile]) -> Table:
    """``corral profile``: device, samples/s at each measured batch, fitted cost, max batch."""
    table = Table(title="profiles", title_justify="left")
    for name in ("host", "device", "samples/s at batch", "time per sample", "fixed per step",
                 "max batch"):
        table.add_column(name, overflow="fold")
    for result in results:
        if not result.ok:
            table.add_row(result.host, Text("FAILED", style="red"), Text(result.error), "", "",
                          "")
            continue
        rates = ", ".join(f"{r:.1f} @ {b}" for b, r in zip(result.batches, result.samples_per_s,
                                                           strict=False))
        table.add_row(
            result.host, f"{result.device} {result.device_name}".strip(), rates,
            "-" if result.per_sample_s is None else f"{result.per_sample_s * 1e3:.3f} ms",
            "-" if result.fixed_s is None else f"{result.fixed_s * 1e3:.2f} ms",
            "unknown" if result.max_batch is None else str(result.max_batch),
        )
    return table


async def follow_run(
    handle: RunHandle,
    *,
    console: Console | None = None,
    until_running: bool = False,
    view: RunView | None = None,
) -> int:
    """Print ``handle``'s events until the run ends; 0 only if it completed.

    ``until_running``: return as soon as the run is running (``corral run --detach``), 0 then.
    ``view``: the state to update (a caller that cancels the follower reads it afterwards).
    """
    console = console or Console()
    view = view or RunView(handle.run_id)

    def emit(lines: list[str]) -> None:
        for line in lines:
            console.print(Text(line), soft_wrap=True)

    async def consume(live: Live | None) -> int | None:
        events = handle.events()
        try:
            async for event in events:
                emit(view.update(event))
                if isinstance(event, RunStatus) and event.report is not None:
                    console.print(check_table(event.report))
                if live is not None:
                    live.update(view.renderable())
                elif isinstance(event, RankEvent) and view.progress_due():
                    emit([view.progress_text()])
                if until_running and view.state == "running":
                    return 0
                if view.final is not None:
                    break
        finally:
            # Leaving early (detach, Ctrl-C): let the stream release its channels now.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return None

    if console.is_terminal:
        with Live(view.renderable(), console=console, refresh_per_second=4,
                  transient=False) as live:
            early = await consume(live)
    else:
        early = await consume(None)
        if view.ranks:
            console.print(view.rank_table())
    return early if early is not None else view.exit_code()
