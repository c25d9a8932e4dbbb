"""TensorBoard event files written from this machine's copy of a run's events.

Nothing runs on the hosts: the follower that owns a run's local copy (``remote.stream``) hands
every copied event line to a ``BoardWriter``, which writes ``<run dir>/tensorboard/`` with the
tensorboard package's own ``EventFileWriter`` (records, checksums and the background flush are
its). Old runs, and runs followed before this existed, are converted from the copy on demand
(``convert_run``, ``corral tensorboard``). Without the tensorboard extra nothing is written
live, and ``corral tensorboard`` says how to install it.

Scalars, by TensorBoard section (the part of the tag before ``/``):

- ``loss/global``, ``lr/lr``, ``eval/<metric>``;
- ``throughput/cluster_samples_per_s``, ``throughput/ideal_samples_per_s`` (Σ ranks'
  ``local_batch / compute_s``), ``throughput/efficiency`` (measured / ideal);
- per rank ``rank_samples_per_s/rankN``, ``rank_compute_s/rankN``, ``rank_share/rankN`` (its part
  of the global batch), ``rank_utilisation/rankN`` (compute / step time);
- per rank ``gpu_util/rankN``, ``cpu_percent/rankN`` (at the rank's latest step).

Text: ``balancer/decisions``, one entry per rebalance with its reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiles.errors import UsageError
from remote.history import Recorded, parse_line, read_lines
from remote.stream import COLLECTED, LOCK_FILE, CollectedCopy
from trainer.events import RebalanceEvent, ResourceEvent, StartEvent, StepEvent

BOARD_DIR = "tensorboard"
"""Under a run's local directory."""
MISSING = ("tensorboard is not installed; install the tensorboard extra (pip install "
           "'corral[tensorboard]', or pip install tensorboard)")
PENDING_STEPS = 256
"""Steps kept waiting for every rank's numbers (for the ideal) before they are dropped."""
RANK_PATH = re.compile(r"^metrics/rank-(\d+)\.jsonl$")
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
    """Turns a run's event lines into TensorBoard scalars and texts, as they come."""

    def __init__(self, directory: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text import summary_v2 as text_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._text = event_pb2.Event, summary_pb2.Summary, \
            text_summary.text_pb
        self.directory = directory
        self._writer = EventFileWriter(str(directory), max_queue_size=1000, flush_secs=FLUSH_S)
        self.points = 0
        """Scalar points written so far."""
        self._global_batch: int | None = None
        self._world: int | None = None
        self._cluster: dict[int, float] = {}
        self._pending: dict[int, dict[int, tuple[int, float]]] = {}
        self._rank_step: dict[int, int] = {}

    # ---------------------------------------------------------------- writing
    def _scalars(self, step: int, t: float, values: list[tuple[str, float | None]]) -> None:
        entries = [self._summary.Value(tag=tag, simple_value=value)
                   for tag, value in values if value is not None]
        if entries:
            self._writer.add_event(self._event(wall_time=t, step=step,
                                               summary=self._summary(value=entries)))
            self.points += len(entries)

    def add_line(self, host: str, rank: int, text: str) -> None:
        """One line of a rank's event file, as copied."""
        record = parse_line(host, rank, text)
        if record is not None:
            self.add(record)

    def add(self, record: Recorded) -> None:
        """One decoded event line."""
        event = record.event
        if isinstance(event, StepEvent):
            self._step(event, record.data)
        elif isinstance(event, ResourceEvent):
            step = self._rank_step.get(event.rank, 0)
            self._scalars(step, event.t, [(f"gpu_util/rank{event.rank}", event.gpu_util),
                                          (f"cpu_percent/rank{event.rank}", event.cpu_percent)])
        elif isinstance(event, RebalanceEvent):
            self._writer.add_event(self._event(
                wall_time=event.t, step=event.step,
                summary=self._text("balancer/decisions", decision_text(event))))
        elif isinstance(event, StartEvent):
            self._global_batch, self._world = event.global_batch, event.world_size
        elif record.kind == "eval" and record.rank == 0:
            self._eval(record.data)

    def _step(self, event: StepEvent, data: dict[str, Any]) -> None:
        rank, step = event.rank, event.step
        self._rank_step[rank] = step
        share = event.local_batch / self._global_batch if self._global_batch else None
        utilisation = event.compute_s / event.step_s if event.step_s > 0 else None
        values: list[tuple[str, float | None]] = [
            (f"rank_samples_per_s/rank{rank}", event.samples_per_s),
            (f"rank_compute_s/rank{rank}", event.compute_s),
            (f"rank_share/rank{rank}", share), (f"rank_utilisation/rank{rank}", utilisation)]
        if rank == 0:
            cluster = event.cluster_samples_per_s
            if cluster is None and self._global_batch and event.step_s > 0:
                cluster = self._global_batch / event.step_s
            lr = data.get("lr")
            values += [("loss/global", event.global_loss if event.global_loss is not None
                        else event.loss), ("throughput/cluster_samples_per_s", cluster),
                       ("lr/lr", float(lr) if isinstance(lr, int | float) else None)]
            if cluster is not None:
                self._cluster[step] = cluster
        self._scalars(step, event.t, values)
        self._ideal(step, rank, event)

    def _ideal(self, step: int, rank: int, event: StepEvent) -> None:
        """Once every rank reported ``step``: its ideal throughput and the efficiency."""
        cells = self._pending.setdefault(step, {})
        cells[rank] = (event.local_batch, event.compute_s)
        if self._world is None or len(cells) < self._world or step not in self._cluster:
            if len(self._pending) > PENDING_STEPS:
                oldest = min(self._pending)
                del self._pending[oldest]
                self._cluster.pop(oldest, None)
            return
        del self._pending[step]
        cluster = self._cluster.pop(step)
        ideal = sum(b / c for b, c in cells.values() if c > 0) or None
        self._scalars(step, event.t, [
            ("throughput/ideal_samples_per_s", ideal),
            ("throughput/efficiency", cluster / ideal if ideal else None)])

    def _eval(self, data: dict[str, Any]) -> None:
        step, t = data.get("step"), data.get("t")
        if not isinstance(step, int) or not isinstance(t, int | float):
            return
        self._scalars(step, float(t), [
            (f"eval/{key}", float(value)) for key, value in data.items()
            if key not in ("t", "v", "rank", "step", "event")
            and isinstance(value, int | float) and not isinstance(value, bool)])

    def flush(self) -> None:
        """Write what is queued to disk now."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
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
        match = RANK_PATH.match(path)
        if match:
            writer.add_line(host, int(match.group(1)), text)

    for copy in owned:
        copy.on_line = functools.partial(feed, copy.root.name)
    return writer


def being_followed(run_dir: Path) -> bool:
    """True while a follower owns the run's copy (it writes the TensorBoard files live)."""
    for lock in (run_dir / COLLECTED).glob(f"*/{LOCK_FILE}"):
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
