"""A run logged to the experiment trackers of ``[tracking]`` (MLflow, Aim) from its local copy.

Like TensorBoard (``remote.records.tensorboard``), nothing runs on the hosts: the follower that
owns a run's copy hands every copied event line to a ``TrackerWriter`` per tracker, which
sends them in batches to a process of its own; there the reducer (``StepFeed``) turns them
into each step's values, as ``remote.records.scalars`` names them, and the tracker's client
sends them. Runs are converted afterwards from the copy
(``convert_tracker``: ``corral mlflow``, ``corral aim``).

Continuity: ``<run dir>/trackers/<tracker>.json`` holds the tracker's run id and the last step
(and evaluation) sent. A restarted or reattached run, or a conversion, opens that same tracker
run, feeds the reducer the whole copy and sends only the steps after the last one sent.

A tracker that fails (server down, disk full, falling behind) is given up for the rest of the
follow with one warning; the events stay in the copy, and ``corral mlflow RUN`` sends the rest.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from profiles.user_errors import UsageError
from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES
from remote.records.collected import CollectedCopy
from remote.records.history import Recorded, read_lines
from remote.records.runs import RunInfo
from remote.records.tensorboard import being_followed
from remote.records.tracker_process import Job, TrackerRecord, Typed, serve
from remote.records.tracker_sinks import TrackerStart, sinks_for
from trainer.events import TrainerEvent
from trainer.run_layout import RunLayout

BATCH_EVENTS = 2000
"""Copied lines' events sent to the tracker's process in one batch."""
BACKFILL_RECORDS = 5000
"""The copy so far goes to the tracker's process in batches of this many events."""
FLUSH_S = 5.0
"""A batch goes out at least this often while lines come."""
MAX_QUEUED = 500
"""Batches waiting for a slow tracker before it is given up (the copy keeps the events)."""
CLOSE_WAIT_S = 60.0
"""How long the end of a follow waits for a tracker to take what is left."""


def corral_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_params(config: ClusterConfig) -> dict[str, str]:
    """Every ``[run]`` setting, each host's devices and ranks, and corral's version."""
    params = {f"run.{key}": json.dumps(value) if isinstance(value, dict | list | tuple)
              else str(value) for key, value in asdict(config.run).items()
              if key != "keys_set"}
    for host in config.hosts:
        params[f"host.{host.name}"] = (f"address={host.address} gpus={host.gpus} "
                                       f"nproc={host.nproc if host.nproc is not None else 'auto'}")
    params["corral_version"] = corral_version()
    return params


def tracker_start(config: ClusterConfig, info: RunInfo) -> TrackerStart:
    return TrackerStart(experiment=config.tracking.experiment or config.cluster.name,
                        name=info.label, params=run_params(config),
                        tags={"corral.run_id": info.run_id, "corral.name": info.name,
                              "corral.cluster": info.cluster})


class TrackerWriter:
    """One tracker's run of one corral run. The tracker's client and the run's reducer run in
    a process of their own (``remote.records.tracker_process``): the follower only collects
    the copied lines' typed events and sends them there in batches, in order."""

    def __init__(self, tracker: str, where: str, run_dir: Path, start: TrackerStart,
                 warn: Callable[[str], None]) -> None:
        self.name, self.run_dir, self._warn = tracker, run_dir, warn
        self.record = Path(RunLayout(run_dir).tracker_record(tracker))
        self.failed = False
        self._events: list[Typed] = []
        self._batch_since = time.monotonic()
        context = multiprocessing.get_context("spawn")
        self._jobs: Any = context.Queue()
        self._notes: Any = context.Queue()
        self._process = context.Process(
            target=serve, name=f"corral-{tracker}",
            args=(tracker, where, str(self.record), RunLayout(run_dir).tracker_log(tracker),
                  self._jobs, self._notes))
        self._process.start()
        self._jobs.put(("open", start))

    @property
    def tracker_run(self) -> str | None:
        """The tracker's run id, once opened."""
        return TrackerRecord.read(self.record).run

    @property
    def sent_step(self) -> int:
        """The last step the tracker has."""
        return TrackerRecord.read(self.record).step

    def _give_up(self, why: str) -> None:
        self.failed = True
        self._warn(f"{self.name}: {why}; no more logging there in this follow (training "
                   f"goes on; `corral {self.name} RUN` sends the rest afterwards)")

    def read_notes(self) -> None:
        """Pass on what the tracker's process said."""
        while True:
            try:
                kind, text = self._notes.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "failed":
                self._give_up(text)
            else:
                self._warn(text)

    def _submit(self, job: Job) -> None:
        if self.failed:
            return
        if self._jobs.qsize() >= MAX_QUEUED:
            self._give_up("the tracker falls behind")
            return
        self._jobs.put(job)

    def backfill(self, records: list[Recorded]) -> None:
        """The run's copy so far, in time order (the process sends only what its tracker
        has not had)."""
        for at in range(0, len(records), BACKFILL_RECORDS):
            self._jobs.put(("records", records[at:at + BACKFILL_RECORDS]))

    # ---------------------------------------------------------------- the follower's side
    def add_event(self, event: TrainerEvent, host: str = "?") -> None:
        """A copied line's event (parsed once, by the stream: the process gets it typed)."""
        if self.failed:
            return
        self._events.append((host, event))
        if (len(self._events) >= BATCH_EVENTS
                or time.monotonic() - self._batch_since >= FLUSH_S):
            self.send_batch()

    def send_batch(self) -> None:
        """Send the events collected so far to the tracker's process."""
        if self._events:
            self._submit(("events", self._events))
        self._events, self._batch_since = [], time.monotonic()

    def close(self, state: str | None, model: Path | None = None, *,
              log_model: bool = False) -> None:
        """Send what is left, the final model (``log_model``: or why not) and the outcome
        (None: the run goes on elsewhere or later); the process ends once it sent them."""
        self.send_batch()
        self._submit(("close", state, None if model is None else str(model), log_model))
        self._jobs.put(None)
        self._jobs.close()

    def wait(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Wait for the process to send what it was given; False when it is still at it."""
        self._process.join(timeout)
        self.read_notes()
        return not self._process.is_alive()


def final_model(run_dir: Path) -> Path | None:
    """The final model's folder when it is on this machine (the run ran here, or
    ``corral fetch`` brought it), else None."""
    layout = RunLayout(run_dir)
    for folder in (Path(layout.path(RunLayout.FINAL)),
                   Path(layout.path(RunLayout.FETCHED)) / RunLayout.FINAL):
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


class Trackers:
    """The writers of one follow (none when ``[tracking]`` names no tracker)."""

    def __init__(self, writers: list[TrackerWriter], run_dir: Path, log_model: bool) -> None:
        self.writers, self.run_dir, self.log_model = writers, run_dir, log_model
        self._lock = threading.Lock()
        self._warnings: list[str] = []

    def warn(self, line: str) -> None:
        with self._lock:
            self._warnings.append(line)

    def take_warnings(self) -> list[str]:
        """The warnings since the last call (the trackers' processes send them)."""
        for writer in self.writers:
            writer.read_notes()
        with self._lock:
            lines, self._warnings = self._warnings, []
        return lines

    def close(self, state: str | None) -> None:
        """End every tracker's run with ``state`` (the final model too when it completed)."""
        model = final_model(self.run_dir) if state == "completed" and self.log_model else None
        for writer in self.writers:
            writer.close(state, model, log_model=state == "completed" and self.log_model)

    def wait(self, timeout: float = CLOSE_WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        for writer in self.writers:
            if not writer.wait(max(0.0, deadline - time.monotonic())):
                self.warn(f"{writer.name}: still sending after {timeout:.0f} s; left to "
                          "finish in the background")


def open_trackers(config: ClusterConfig, info: RunInfo, run_dir: Path,
                  only: str | None = None) -> Trackers:
    """A writer per tracker ``[tracking]`` names (``only``: that one), each fed the run's copy
    so far (it sends only what its tracker has not had)."""
    tracking = config.tracking
    trackers = Trackers([], run_dir, tracking.log_model)
    if not tracking.enabled:
        return trackers
    start = tracker_start(config, info)
    wanted = sinks_for(tracking.mlflow if only in (None, "mlflow") else None,
                       tracking.aim if only in (None, "aim") else None)
    trackers.writers = [TrackerWriter(name, where, run_dir, start, trackers.warn)
                        for name, where in wanted]
    records = read_lines(run_dir)[0]
    for writer in trackers.writers:
        writer.backfill(records)
    return trackers


def live_trackers(config: ClusterConfig, info: RunInfo, run_dir: Path,
                  copies: Iterable[CollectedCopy]) -> Trackers:
    """The trackers of a follower that owns the copies (none for one that does not: the
    owner logs); a tracker whose package is missing is one warning, not an error."""
    if not any(copy.writer for copy in copies) or not config.tracking.enabled:
        return Trackers([], run_dir, False)
    try:
        return open_trackers(config, info, run_dir)
    except Exception as error:
        trackers = Trackers([], run_dir, False)
        trackers.warn(f"tracking off: {error}")
        return trackers


@dataclass(frozen=True)
class TrackerConversion:
    """What ``convert_tracker`` did."""

    tracker_run: str | None
    """The tracker's run id (None: left alone, a live follower logs the run)."""
    last_step: int
    warnings: list[str]


def convert_tracker(config: ClusterConfig, info: RunInfo, run_dir: Path,
                    tracker: str) -> TrackerConversion:
    """Send what ``tracker`` has not had of a recorded run from its copy, and its outcome."""
    key = {"mlflow": config.tracking.mlflow, "aim": config.tracking.aim}[tracker]
    if not key:
        raise UsageError(f"{config.path}: [tracking] {tracker} is not set; add it (see "
                         "docs/tracking.md) to say where the runs go",
                         title=f"no {tracker} tracker")
    if being_followed(run_dir):
        return TrackerConversion(None, 0, [])
    trackers = open_trackers(config, info, run_dir, only=tracker)
    trackers.close(info.state if info.state in FINAL_RUN_STATES else None)
    trackers.wait()
    writer = trackers.writers[0]
    return TrackerConversion(None if writer.failed else writer.tracker_run, writer.sent_step,
                             trackers.take_warnings())
