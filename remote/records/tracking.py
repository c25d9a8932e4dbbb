"""A run logged to the experiment trackers of ``[tracking]`` (MLflow, Aim) from its local copy.

Like TensorBoard (``remote.records.tensorboard``), nothing runs on the hosts: the follower that
owns a run's copy hands every copied event line to a ``TrackerWriter`` per tracker, which feeds
the reducer (``StepFeed``) and sends each step's values, as ``remote.records.scalars`` names
them, to the tracker on a background thread. Runs are converted afterwards from the copy
(``convert_tracker``: ``corral mlflow``, ``corral aim``).

Continuity: ``<run dir>/trackers/<tracker>.json`` holds the tracker's run id and the last step
(and evaluation) sent. A restarted or reattached run, or a conversion, opens that same tracker
run, feeds the reducer the whole copy and sends only the steps after the last one sent.

A tracker that fails (server down, disk full, falling behind) is given up for the rest of the
follow with one warning; the events stay in the copy, and ``corral mlflow RUN`` sends the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from remote.records.history import read_lines
from remote.records.runs import RunInfo
from remote.records.scalars import Scalars, StepFeed, decision_text, eval_scalars
from remote.records.tensorboard import being_followed
from remote.records.tracker_sinks import Point, Sink, TrackerStart, sinks_for
from trainer.events import EvalEvent, RebalanceEvent
from trainer.run_layout import RunLayout

BATCH_STEPS = 100
"""Steps sent to the tracker in one batch (MLflow takes 1000 values a call)."""
FLUSH_S = 5.0
"""A batch goes out at least this often while steps come."""
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
              else str(value) for key, value in asdict(config.run).items()}
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


class TrackerWriter(StepFeed):
    """One tracker's run of one corral run, fed event by event; the tracker's calls run on
    a thread of their own, in order."""

    def __init__(self, sink: Sink, run_dir: Path, start: TrackerStart,
                 warn: Callable[[str], None]) -> None:
        super().__init__()
        self.sink, self.run_dir, self._warn = sink, run_dir, warn
        self.record = Path(RunLayout(run_dir).tracker_record(sink.name))
        saved: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(self.record.read_text(encoding="utf-8"))
        self.tracker_run: str | None = saved.get("run")
        self.sent_step = self.queued_step = int(saved.get("step", 0))
        self.sent_eval = self.queued_eval = int(saved.get("eval", -1))
        self.failed = False
        self._batch: list[Point] = []
        self._batch_since = time.monotonic()
        self._batch_steps = 0
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"corral-{sink.name}")
        self._thread.start()
        self._submit(lambda: self._open(start))

    # ---------------------------------------------------------------- the tracker's thread
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self.failed:
                continue
            try:
                job()
            except Exception as error:
                self._give_up(f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
                              if str(error) else type(error).__name__)

    def _give_up(self, why: str) -> None:
        self.failed = True
        self._warn(f"{self.sink.name}: {why}; no more logging there in this follow (training "
                   f"goes on; `corral {self.sink.name} RUN` sends the rest afterwards)")

    def _submit(self, job: Callable[[], None]) -> None:
        if self.failed:
            return
        if self._jobs.qsize() >= MAX_QUEUED:
            self._give_up("the tracker falls behind")
            return
        self._jobs.put(job)

    def _open(self, start: TrackerStart) -> None:
        new = self.tracker_run is None
        self.tracker_run = self.sink.open(self.tracker_run, start)
        self._save()
        if new:
            self.sink.params(start.params)

    def _save(self) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run": self.tracker_run, "step": self.sent_step,
                                   "eval": self.sent_eval}), encoding="utf-8")
        os.replace(tmp, self.record)

    def _send(self, points: list[Point], step: int, evaluated: int) -> None:
        self.sink.metrics(points)
        self.sent_step, self.sent_eval = step, evaluated
        self._save()

    # ---------------------------------------------------------------- the follower's side
    def _add_points(self, step: int, t: float, values: Scalars) -> None:
        self._batch += [(step, t, name, value) for name, value in values if value is not None]
        self._batch_steps += 1
        if (self._batch_steps >= BATCH_STEPS
                or time.monotonic() - self._batch_since >= FLUSH_S):
            self.send_batch()

    def send_batch(self) -> None:
        """Queue the values collected so far for the tracker."""
        if self._batch:
            points, step, evaluated = self._batch, self.queued_step, self.queued_eval
            self._submit(lambda: self._send(points, step, evaluated))
        self._batch, self._batch_since, self._batch_steps = [], time.monotonic(), 0

    def on_step(self, step: int, t: float, values: Scalars) -> None:
        if step > self.queued_step:
            self.queued_step = step
            self._add_points(step, t, values)

    def on_eval(self, event: EvalEvent) -> None:
        if event.step > self.queued_eval:
            self.queued_eval = event.step
            self._add_points(event.step, event.t, eval_scalars(event))

    def on_decision(self, event: RebalanceEvent) -> None:
        if event.step > self.queued_step:
            text = decision_text(event)
            self._submit(lambda: self.sink.text(event.step, "balancer_decisions", text))

    def close(self, state: str | None, model: Path | None = None, *,
              log_model: bool = False) -> None:
        """Queue what is left, the final model (``log_model``: or why not) and the outcome
        (None: the run goes on elsewhere or later); the thread ends once it sent them."""
        self.flush_pending()
        self.send_batch()
        if model is not None:
            self._submit(lambda: self.sink.model(model))
        elif log_model:
            self._submit(lambda: self._warn(
                f"{self.sink.name}: the final model is on its host, not here: `corral fetch "
                f"RUN`, then `corral {self.sink.name} RUN` logs it"))
        self._submit(lambda: self.sink.close(state))
        self._jobs.put(None)

    def wait(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Wait for the thread to send what it was given; False when it is still at it."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


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
        """The warnings since the last call (the trackers' threads add them)."""
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
                self.warn(f"{writer.sink.name}: still sending after {timeout:.0f} s; left to "
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
    sinks = sinks_for(tracking.mlflow if only in (None, "mlflow") else None,
                      tracking.aim if only in (None, "aim") else None)
    trackers.writers = [TrackerWriter(sink, run_dir, start, trackers.warn) for sink in sinks]
    for record in read_lines(run_dir)[0]:
        for writer in trackers.writers:
            writer.add(record)
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
