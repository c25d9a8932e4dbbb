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
  per-step figures (``figures.metrics``), the ones ``corral report`` plots;
- per rank ``rank_samples_per_s/rankN``, ``rank_compute_s/rankN``, ``rank_share/rankN`` (its part
  of the global batch), ``rank_utilisation/rankN`` (compute / step time), every step up to 32
  ranks, every ``ranks // 32`` steps above;
- per rank ``gpu_util/rankN``, ``cpu_percent/rankN`` (at the rank's latest step).

Text: ``balancer/decisions``, one entry per rebalance with its reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from profiles.user_errors import UsageError
from remote.records.collected import CollectedCopy
from remote.records.history import read_lines
from remote.records.private import private_dir
from remote.records.scalars import Scalars, StepFeed, decision_text, eval_scalars
from trainer.events import EvalEvent, RebalanceEvent, ResourceEvent
from trainer.run_layout import RunLayout

BOARD_DIR = "tensorboard"
"""Under a run's local directory."""
MISSING = ("tensorboard is not installed; install the tensorboard extra (pip install "
           "'corral[tensorboard]', or pip install tensorboard)")
FLUSH_S = 5
"""How often the writer's background thread flushes to disk."""


def available() -> bool:
    """True when the tensorboard package can be imported."""
    try:
        import tensorboard.summary.writer.event_file_writer  # noqa: F401
    except ImportError:
        return False
    return True


def _quiet_writer_threads() -> None:
    """Keep tensorboard's writer thread from printing its error: the thread keeps it and the
    next ``add_event``, ``flush`` or ``close`` raises it again, where the records' write
    errors are caught and said in corral's words (a read-only or full run copy). Printed by
    the thread too, its 27-line traceback came before that sentence. Other threads' errors
    reach the hook that was there."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "corral_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread)
                and isinstance(args.exc_value, Exception)):
            previous(args)

    hook.corral_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def board_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard files go."""
    return run_dir / BOARD_DIR


class BoardWriter(StepFeed):
    """Turns a run's events into TensorBoard scalars and texts, as they come: one event per
    step (not one per rank, whatever the size of the cluster), with the reducer's figures."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text import summary_v2 as text_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._text = event_pb2.Event, summary_pb2.Summary, \
            text_summary.text_pb
        self._value = summary_pb2.Summary.Value
        self.directory = directory
        private_dir(directory)  # inside the 0700 run directory; private itself too
        _quiet_writer_threads()
        self._writer = EventFileWriter(str(directory), max_queue_size=1000, flush_secs=FLUSH_S)
        self.points = 0
        """Scalar points written so far."""

    def _scalars(self, step: int, t: float, values: Scalars) -> None:
        points = [self._value(tag=tag, simple_value=value)
                  for tag, value in values if value is not None]
        if points:
            self._writer.add_event(self._event(wall_time=t, step=step,
                                               summary=self._summary(value=points)))
            self.points += len(points)

    def on_step(self, step: int, t: float, values: Scalars) -> None:
        self._scalars(step, t, values)

    def on_eval(self, event: EvalEvent) -> None:
        self._scalars(event.step, event.t, eval_scalars(event))

    def on_decision(self, event: RebalanceEvent) -> None:
        self._writer.add_event(self._event(
            wall_time=event.t, step=event.step,
            summary=self._text("balancer/decisions", decision_text(event))))

    def on_resource(self, step: int, event: ResourceEvent) -> None:
        self._scalars(step, event.t, [(f"gpu_util/rank{event.rank}", event.gpu_util),
                                      (f"cpu_percent/rank{event.rank}", event.cpu_percent)])

    def flush(self) -> None:
        """Write what is queued to disk now."""
        self._writer.flush()

    def close(self) -> None:
        """Write the steps still waiting for a rank, flush and close the event file."""
        self.flush_pending()
        self._writer.close()


def live_writer(run_dir: Path, copies: Iterable[CollectedCopy]) -> BoardWriter | None:
    """A writer for the copies this follower owns (``feed_copies`` feeds it), or None: without
    the tensorboard extra, or when another follower owns the copies (it writes the files)."""
    if not any(copy.writer for copy in copies) or not available():
        return None
    return BoardWriter(board_dir(run_dir))


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
