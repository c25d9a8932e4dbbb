"""TensorBoard event files written from this machine's copy of a run's events.

Nothing runs on the hosts: the follower that owns a run's local copy (``remote.run.stream``) hands
every copied event line to a ``BoardWriter``, which writes ``<run dir>/tensorboard/`` with the
tensorboard package's own ``EventFileWriter`` (records, checksums and the background flush are
its). Old runs, and runs followed before this existed, are converted from the copy on demand
(``convert_run``, ``corral tensorboard``). Without the tensorboard extra nothing is written
live, and ``corral tensorboard`` says how to install it.

Scalars, by TensorBoard section (the part of the tag before ``/``):

- ``loss/global``, ``lr/lr``, ``eval/<metric>``;
- ``throughput/cluster_samples_per_s``, ``throughput/ideal_samples_per_s`` (Σ ranks'
  ``local_batch / compute_s``), ``throughput/efficiency`` (measured / ideal): the reducer's
  per-step figures (``remote.records.figures``), the ones ``corral report`` plots;
- per rank ``rank_samples_per_s/rankN``, ``rank_compute_s/rankN``, ``rank_share/rankN`` (its part
  of the global batch), ``rank_utilisation/rankN`` (compute / step time), every step up to 32
  ranks, every ``ranks // 32`` steps above;
- per rank ``gpu_util/rankN``, ``cpu_percent/rankN`` (at the rank's latest step).

Text: ``balancer/decisions``, one entry per rebalance with its reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiles.user_errors import UsageError
from remote.records.collected import CollectedCopy
from remote.records.figures import efficiency_of
from remote.records.history import Recorded, parse_line, read_lines
from remote.records.private import private_dir
from remote.records.reducer import RunFigures
from trainer.events import (
    EVAL_METRICS,
    EvalEvent,
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
)
from trainer.run_layout import EVENTS_NAME, RunLayout

BOARD_DIR = "tensorboard"
"""Under a run's local directory."""
MISSING = ("tensorboard is not installed; install the tensorboard extra (pip install "
           "'corral[tensorboard]', or pip install tensorboard)")
PENDING_STEPS = 256
"""Steps kept waiting for every rank's numbers (for the ideal) before they are written
without them."""
RANKS_EVERY_STEP = 32
"""Up to this many ranks, per-rank series get a point every step; a cluster of N ranks gets one
every N // 32 steps (the cluster-wide series still every step): per-rank points cost the
follower CPU for every rank and step, and TensorBoard samples long series down anyway."""
FLUSH_S = 5
"""How often the writer's background thread flushes to disk."""


def available() -> bool:
    """True when the tensorboard package can be imported."""
    try:
        import tensorboard.summary.writer.event_file_writer  # noqa: F401
    except ImportError:
        return False
    return True


def board_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard files go."""
    return run_dir / BOARD_DIR


class BoardWriter:
    """Turns a run's events into TensorBoard scalars and texts, as they come.

    Every typed event goes into the run's reducer (``RunFigures``), and the values written are
    its figures: a step waits until every rank reported it, then goes out as one TensorBoard
    event with the step's ideal and efficiency: one record per step, not one per rank,
    whatever the size of the cluster.
    """

    def __init__(self, directory: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text import summary_v2 as text_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._text = event_pb2.Event, summary_pb2.Summary, \
            text_summary.text_pb
        self._value = summary_pb2.Summary.Value
        self.directory = directory
        private_dir(directory)  # inside the 0700 run directory; private itself too
        self._writer = EventFileWriter(str(directory), max_queue_size=1000, flush_secs=FLUSH_S)
        self.points = 0
        """Scalar points written so far."""
        self.figures = RunFigures()
        self._pending: dict[int, float] = {}
        """Steps waiting for every rank, with the time of their newest line."""
        self._rank_step: dict[int, int] = {}
        self._rank_stride = 1
        """Per-rank series are written every this many steps (see ``RANKS_EVERY_STEP``)."""

    # ---------------------------------------------------------------- writing
    def _emit(self, step: int, t: float, values: list[Any]) -> None:
        if values:
            self._writer.add_event(self._event(wall_time=t, step=step,
                                               summary=self._summary(value=values)))
            self.points += len(values)

    def _scalars(self, step: int, t: float, values: list[tuple[str, float | None]]) -> None:
        self._emit(step, t, [self._value(tag=tag, simple_value=value)
                             for tag, value in values if value is not None])

    def add_line(self, host: str, rank: int, text: str) -> None:
        """One line of a rank's event file, as copied (a broken or unknown line is skipped)."""
        record = parse_line(host, rank, text)
        if record is not None:
            self.add(record)

    def add(self, record: Recorded) -> None:
        """One recorded event line."""
        self.add_event(record.event, record.host)

    def add_event(self, event: TrainerEvent, host: str = "?") -> None:
        """One typed event of a rank running on ``host``."""
        self.figures.observe(event, host)
        if isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, ResourceEvent):
            step = self._rank_step.get(event.rank, 0)
            self._scalars(step, event.t, [(f"gpu_util/rank{event.rank}", event.gpu_util),
                                          (f"cpu_percent/rank{event.rank}", event.cpu_percent)])
        elif isinstance(event, RebalanceEvent):
            self._writer.add_event(self._event(
                wall_time=event.t, step=event.step,
                summary=self._text("balancer/decisions", decision_text(event))))
        elif isinstance(event, StartEvent):
            self._rank_stride = max(1, event.world_size // RANKS_EVERY_STEP)
        elif isinstance(event, EvalEvent) and event.rank == 0:
            self._scalars(event.step, event.t, [
                (f"eval/{key}", getattr(event, key)) for key in EVAL_METRICS])

    def _step(self, event: StepEvent) -> None:
        self._rank_step[event.rank] = event.step
        self._pending[event.step] = max(self._pending.get(event.step, 0.0), event.t)
        if self.figures.complete(self.figures.rows[event.step]):
            self._flush_step(event.step)
        elif len(self._pending) > PENDING_STEPS:
            self._flush_step(min(self._pending))  # a rank went quiet: write what there is

    def _flush_step(self, step: int) -> None:
        """Write a step's values, with its ideal and efficiency when every rank is in."""
        t = self._pending.pop(step)
        row = self.figures.rows[step]
        values: list[tuple[str, float | None]] = []
        if step % self._rank_stride == 0:
            for rank, cell in sorted(row.cells.items()):
                values += [(f"rank_samples_per_s/rank{rank}", cell.samples_per_s),
                           (f"rank_compute_s/rank{rank}", cell.compute_s),
                           (f"rank_share/rank{rank}", row.share(rank)),
                           (f"rank_utilisation/rank{rank}", cell.utilisation)]
        if row.step_s is not None:
            values += [("loss/global", row.loss),
                       ("throughput/cluster_samples_per_s", row.samples_per_s),
                       ("lr/lr", row.lr)]
        if self.figures.complete(row):
            ideal = row.ideal_samples_per_s
            values += [("throughput/ideal_samples_per_s", ideal),
                       ("throughput/efficiency", efficiency_of(row.samples_per_s, ideal))]
        self._scalars(step, t, values)

    def flush(self) -> None:
        """Write what is queued to disk now."""
        self._writer.flush()

    def close(self) -> None:
        """Write the steps still waiting for a rank, flush and close the event file."""
        for step in sorted(self._pending):
            self._flush_step(step)
        self._writer.close()


def decision_text(event: RebalanceEvent) -> str:
    """``step 6: [16, 16, 16] → [22, 14, 12] (dynamic, predicted +25%): <reason>``."""
    return (f"step {event.step}: {list(event.previous)} → {list(event.split)} "
            f"({event.policy}, predicted {event.predicted_gain:+.0%}): {event.reason}")


def live_writer(run_dir: Path, copies: Iterable[CollectedCopy]) -> BoardWriter | None:
    """A writer fed by every copy this follower owns, or None: without the tensorboard
    extra, or when another follower owns the copies (it writes the files)."""
    owned = [copy for copy in copies if copy.writer]
    if not owned or not available():
        return None
    writer = BoardWriter(board_dir(run_dir))

    def feed(host: str, path: str, text: str) -> None:
        folder, _, name = path.rpartition("/")
        match = EVENTS_NAME.match(name)
        if match and folder == RunLayout.METRICS:
            writer.add_line(host, int(match.group(1)), text)

    for copy in owned:
        copy.on_line = functools.partial(feed, copy.root.name)
    return writer


def being_followed(run_dir: Path) -> bool:
    """True while a follower owns the run's copy (it writes the TensorBoard files live)."""
    for lock in Path(RunLayout(run_dir).path(RunLayout.COLLECTED)).glob(f"*/{RunLayout.COPY_LOCK}"):
        with open(lock, "ab") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class Converted:
    """What ``convert_run`` did."""

    directory: Path
    points: int
    """Scalar points written (-1: left alone, a live follower writes them)."""


def convert_run(run_dir: Path) -> Converted:
    """(Re)write a run's TensorBoard files from its event copy; a run being followed is left
    to its follower."""
    if not available():
        raise UsageError(MISSING, title="no tensorboard")
    directory = board_dir(run_dir)
    if being_followed(run_dir):
        return Converted(directory, -1)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
    writer = BoardWriter(directory)
    try:
        for record in read_lines(run_dir)[0]:
            writer.add(record)
    finally:
        writer.close()
    return Converted(directory, writer.points)


def board_label(run_id: str, name: str) -> str:
    """A run's name in TensorBoard: its name and id (``,`` and ``:`` separate logdir specs)."""
    label = f"{name} ({run_id})" if name else run_id
    return label.replace(",", " ").replace(":", " ")


def board_command(python: str, runs: list[tuple[str, Path]], port: int) -> list[str]:
    """The command that serves ``runs`` (label, run directory) on ``port``."""
    spec = ",".join(f"{label}:{board_dir(path)}" for label, path in runs)
    return [python, "-m", "tensorboard.main", "--logdir_spec", spec, "--port", str(port),
            "--host", "localhost"]
