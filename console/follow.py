"""Follow a run in a plain terminal with rich (``corral run``, ``corral attach --headless``).

On a terminal: a live block with the progress (step/total, ETA, loss, cluster samples/s) and a
per-rank table, with notable events (host states, rebalances, failures, rank output) printed
above it as they happen. Without a terminal (CI, a pipe): the same notable events as plain
lines, a progress line every twentieth of the run (every ``PROGRESS_EVERY_S`` of the run's time
when its length is unknown: a plain script's), and the per-rank table once at the end.

A renderer of the run model (``console.model``), like the Textual console: every event goes
into the ``RunModel``, and the progress, the table and the exit status are read from it (its
figures are the run's reducer's, so the last progress line and the final table show what
``corral report`` shows). The notable lines are the events themselves, written as they arrive.
"""

from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from console.formatting import fmt_duration
from console.log_fold import TracebackFold
from console.model.run import RunModel
from console.tables import check_table
from remote.api import (
    HostStatus,
    LogLine,
    RankEvent,
    RunEvent,
    RunHandle,
    RunStatus,
    trained_nothing,
)
from trainer.events import RebalanceEvent

RANK_COLUMNS = (
    ("host", "left"), ("rank", "right"), ("device", "left"), ("local batch", "right"),
    ("samples/s", "right"), ("utilisation", "right"), ("status", "left"),
)
"""The per-rank table's columns and how each is justified."""


# ---- formatting: the model's state ---------------------------------------------------------


def progress_text(model: RunModel) -> str:
    """``step 40/200 (20%) · ETA 1m12s · loss 1.2340 · 512 samples/s`` (``step 40 · 512
    samples/s`` when the run's length is unknown)."""
    total = model.total_steps
    parts = [f"step {model.step}/{total} ({100 * model.step // total}%)" if total
             else f"step {model.step}"]
    if model.eta_s is not None:
        parts.append(f"ETA {fmt_duration(model.eta_s)}")
    if model.loss is not None:
        parts.append(f"loss {model.loss:.4f}")
    if model.samples_per_s is not None:
        parts.append(f"{model.samples_per_s:.0f} samples/s")
    return " · ".join(parts)


def rank_table(model: RunModel) -> Table:
    """The per-rank table: host, rank, device, local batch, samples/s, utilisation, status
    (the rank's own end status once it has one, else the hosts panel's status)."""
    table = Table(title=f"run {model.run_id}", title_justify="left")
    for name, justify in RANK_COLUMNS:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for view in model.rank_and_host_rows():
        row = view.rank_row
        if row is None:
            continue
        table.add_row(
            row.host, str(row.rank), row.device or "?",
            "-" if row.local_batch is None else str(row.local_batch),
            "-" if row.samples_per_s is None else f"{row.samples_per_s:.1f}",
            "-" if row.compute_share is None else f"{row.compute_share:.0%}",
            row.end_status or view.status,
        )
    return table


def live_block(model: RunModel) -> RenderableType:
    """The live block: state and progress over the per-rank table."""
    return Group(Text(f"{model.state} · {progress_text(model)}", style="bold"),
                 rank_table(model))


def exit_code(model: RunModel) -> int:
    """0 for a run that completed (every rank exited 0, as torchrun's status would be,
    whether or not corral saw a step: a smoke test, an evaluation, workers the script spawned;
    its detail says ``trained 0 steps`` and why); 1 otherwise."""
    return 0 if model.state == "completed" else 1


# ---- formatting: notable events ------------------------------------------------------------


def event_lines(event: RunEvent, fold: TracebackFold | None = None) -> list[str]:
    """The lines ``event`` prints above the progress (none for routine ones; none for the
    lines ``fold`` leaves to the log files)."""
    if isinstance(event, RankEvent):
        return rank_event_lines(event)
    if isinstance(event, HostStatus):
        return [f"{event.host}: {event.state}" + (f": {event.detail}" if event.detail else "")]
    if isinstance(event, LogLine):
        if event.noise:  # torch's chatter and known warnings: in the log files, not here
            return []
        if fold is not None and fold.hides(event):
            return []
        where = event.host if event.rank is None else f"{event.host}:{event.rank}"
        return [f"{where} | {event.text}"]
    return [status_line(event)]


def shown_text(line: str) -> Text:
    """A printed line: a rank's colours show where the console can show them (rich drops
    them on a pipe, a file or under NO_COLOR); every other control code was removed upstream."""
    return Text.from_ansi(line) if "\x1b" in line else Text(line)


class BarHold:
    """A printed stream shows a progress bar once per stretch, at its newest state: a rank's
    bar state waits (``take``) until another line of that rank, or the end (``rest``)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int | None], list[str]] = {}

    def take(self, event: RunEvent, lines: list[str]) -> list[str]:
        """What to print now for ``event`` (whose own lines are ``lines``)."""
        if not isinstance(event, LogLine) or not lines:
            return lines
        key = (event.host, event.rank)
        if event.bar:
            held = [] if event.replaces else self._held.pop(key, [])
            self._held[key] = lines
            return held
        return [*self._held.pop(key, []), *lines]

    def rest(self) -> list[str]:
        """Every bar state still held (the stream ended)."""
        held = [line for lines in self._held.values() for line in lines]
        self._held.clear()
        return held


def status_line(event: RunStatus) -> str:
    """``run R: failed (first failure: HOST rank N): detail`` on one line: the detail's first
    line names the failure and the error's last line; the failed rank's last output lines
    under it are in the log files and ``corral report``. A run that trained nothing shows
    its whole detail: the last lines each rank printed."""
    line = f"run {event.run_id}: {event.state}"
    if event.state == "failed" and event.failed_host is not None:
        rank = f" rank {event.failed_rank}" if event.failed_rank is not None else ""
        line += f" (first failure: {event.failed_host}{rank})"
    if trained_nothing(event.state, event.detail):  # what each rank said before it left
        return f"{line}: {event.detail}"
    detail = event.detail.splitlines()[0] if event.detail else ""
    return line + (f": {detail}" if detail else "")


def rank_event_lines(wrapped: RankEvent) -> list[str]:
    """A rebalance. A rank that ended other than completed is not a line of its own: the run's
    status line names the first failure, the final table each rank's end."""
    event = wrapped.event
    if isinstance(event, RebalanceEvent):
        return [f"step {event.step}: rebalance {list(event.previous)} -> {list(event.split)}"
                f" ({event.policy}, predicted {event.predicted_gain:+.0%}: {event.reason})"]
    return []


LIVE_EVERY_S = 0.1
"""With a terminal: the live block is redrawn at most this often (Rich shows it 4 times a
second)."""
PROGRESS_EVERY_S = 30.0
"""Without a terminal, a run of unknown length (a plain script's): seconds of the run's time
(its events') between two progress lines."""


class ProgressTicker:
    """Without a terminal: says when a progress line is due (every twentieth of the run, and
    at its last step; by time when the run's length is unknown, and once more at its end)."""

    def __init__(self) -> None:
        self._last_step = 0
        self._last_t: float | None = None

    def due(self, model: RunModel) -> bool:
        """True once per twentieth of the run's steps, or per ``PROGRESS_EVERY_S`` of the
        run's time (its first step's line at once) when its length is unknown."""
        total, now = model.total_steps, model.figures.last_t
        if model.step <= self._last_step or now is None:
            return False
        if total:
            every = max(1, total // 20)
            due = model.step % every == 0 or model.step >= total
        else:
            due = self._last_t is None or now - self._last_t >= PROGRESS_EVERY_S
        if due:
            self._last_step, self._last_t = model.step, now
        return due

    def unsaid(self, model: RunModel) -> bool:
        """Steps since the last progress line (the run has ended: its last line is due)."""
        return model.step > self._last_step


# ---- following -----------------------------------------------------------------------------


async def follow_run(
    handle: RunHandle,
    *,
    console: Console | None = None,
    until_running: bool = False,
    model: RunModel | None = None,
) -> int:
    """Print ``handle``'s events until the run ends; 0 only if it completed.

    ``until_running``: return as soon as the run is running (``corral run --detach``), 0 then.
    ``model``: the run model to update (a caller that cancels the follower reads it afterwards)."""
    console = console or Console()
    model = model or RunModel.of_run(handle.run_id)
    ticker, fold, bars = ProgressTicker(), TracebackFold(), BarHold()

    def emit(lines: list[str]) -> None:
        for line in lines:
            console.print(shown_text(line), soft_wrap=True)

    async def consume(live: Live | None) -> int | None:
        events = handle.events()
        drawn = 0.0
        try:
            async for event in events:
                report = model.check_report
                model.apply(event)
                emit(bars.take(event, event_lines(event, fold)))
                if model.check_report is not report and model.check_report is not None:
                    console.print(check_table(model.check_report))
                if live is not None:  # a seat's replay of the record: no table per event
                    if (now := time.monotonic()) - drawn >= LIVE_EVERY_S or not model.live:
                        live.update(live_block(model))
                        drawn = now
                elif isinstance(event, RankEvent) and ticker.due(model):
                    emit([progress_text(model)])
                if until_running and model.state == "running":
                    return 0
                if not model.live:
                    break
        finally:
            emit(bars.rest())
            # Leaving early (detach, Ctrl-C): let the stream release its channels now.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return None

    if console.is_terminal:
        with Live(live_block(model), console=console, refresh_per_second=4,
                  transient=False) as live:
            early = await consume(live)
    else:
        early = await consume(None)
        if early is None and ticker.unsaid(model):
            emit([progress_text(model)])
        if model.ranks:
            console.print(rank_table(model))
    emit(cut_off_lines(model) if early is None else [])
    return early if early is not None else exit_code(model)


def cut_off_lines(model: RunModel) -> list[str]:
    """At a run's end, one line per host it left behind cut off (``left ... (unreachable)``):
    what ran there could not be confirmed ended, and corral finishes it when it is back."""
    return [f"{host} was cut off ({info.detail}): its ranks end by themselves; corral will "
            f"finish what is left there when {host} is back (corral status, check or run)"
            for host, info in model.hosts.items()
            if info.state == "left" and info.detail.endswith("(unreachable)")]
