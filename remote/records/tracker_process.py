"""The process that talks to one tracker for a follower: the tracker's client runs there.

MLflow's store costs about 0.2 ms of CPU per value it stores (SQLAlchemy), and importing it
seconds: in a process of its own that work neither takes the follower's CPU nor holds its
interpreter lock, and a tracker stuck on a dead server holds nothing but itself. The follower
(``remote.records.tracking.TrackerWriter``) sends it the copy's typed events in batches, as
copied, over a queue (the follower's stream parsed each line once; nobody parses it again);
this process feeds them to the run's reducer (``TrackerFeed``, a ``StepFeed``). It sends back
notes (a warning, or that it gave the tracker up), and records in
``<run dir>/trackers/<tracker>.json`` the tracker's run id and the last step and evaluation
the tracker has, so that the next follower or ``corral mlflow`` continues from there.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote.records.history import Recorded
from remote.records.scalars import Scalars, StepFeed, decision_text, eval_scalars
from remote.records.tracker_sinks import AimSink, MlflowSink, Sink, TrackedPoint, TrackerStart
from trainer.events import EvalEvent, RebalanceEvent, TrainerEvent

Typed = tuple[str, TrainerEvent]
"""A copied line's event, with the host whose copy it is: ``(host, event)``."""
Job = tuple[Any, ...]
"""``("open", TrackerStart)``, ``("records", [Recorded])`` (the copy so far, in time order),
``("events", [Typed])`` (events as copied), ``("close", state, model folder or None,
log_model)``; None ends."""
PARENT_CHECK_S = 2.0
"""How often a waiting tracker process looks whether its follower still lives (a killed
follower leaves nothing running: the next one continues from the record)."""


@dataclass
class TrackerRecord:
    """What ``<run dir>/trackers/<tracker>.json`` holds."""

    run: str | None = None
    """The tracker's run id (None: not opened yet)."""
    step: int = 0
    """The last step the tracker has."""
    eval: int = -1
    """The step of the last evaluation the tracker has."""

    @classmethod
    def read(cls, path: Path) -> TrackerRecord:
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = json.loads(path.read_text(encoding="utf-8"))
            return cls(run=saved.get("run"), step=int(saved.get("step", 0)),
                       eval=int(saved.get("eval", -1)))
        return cls()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run": self.run, "step": self.step, "eval": self.eval}),
                       encoding="utf-8")
        os.replace(tmp, path)


def make_sink(tracker: str, where: str) -> Sink:
    return MlflowSink(where) if tracker == "mlflow" else AimSink(where)


def quiet(log_path: str) -> None:
    """Send what this process prints to ``log_path``, not to the console's terminal (MLflow's
    and SQLAlchemy's warnings would draw over the screen)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        for stream in (1, 2):
            os.dup2(log.fileno(), stream)


class TrackerFeed(StepFeed):
    """The run's reducer in the tracker's process: each step's values go to the tracker once,
    after the last step and evaluation it has (``TrackerRecord``)."""

    def __init__(self, sink: Sink, record: TrackerRecord, path: Path) -> None:
        super().__init__(rank_detail=False)  # per rank: samples/s and share
        self.sink, self.record, self.path = sink, record, path
        self.step, self.eval = record.step, record.eval
        self.points: list[TrackedPoint] = []

    def _add(self, step: int, t: float, values: Scalars) -> None:
        self.points += [(step, t, name, value) for name, value in values if value is not None]

    def on_step(self, step: int, t: float, values: Scalars) -> None:
        if step > self.step:
            self.step = step
            self._add(step, t, values)

    def on_eval(self, event: EvalEvent) -> None:
        if event.step > self.eval:
            self.eval = event.step
            self._add(event.step, event.t, eval_scalars(event))

    def on_decision(self, event: RebalanceEvent) -> None:
        if event.step > self.step:
            self.sink.text(event.step, "balancer_decisions", decision_text(event))

    def send(self) -> None:
        """Send the values collected so far, then record how far the tracker is."""
        if self.points:
            self.sink.metrics(self.points)
            self.points = []
        if (self.record.step, self.record.eval) != (self.step, self.eval):
            self.record.step, self.record.eval = self.step, self.eval
            self.record.write(self.path)


def next_job(jobs: Any) -> Job | None:
    """The next job; None once the follower ends it, or died without ending it."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            job: Job | None = jobs.get(timeout=PARENT_CHECK_S)
            return job
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


ERROR_CHARS = 160
"""How much of a tracker's error message the warning quotes (MLflow's first line can hold a
whole server response; the log file has all of it)."""


def error_line(error: BaseException) -> str:
    """``Type: first line of the message``, cut at a word boundary (with ``…``) when long."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > ERROR_CHARS:
        window = text[:ERROR_CHARS + 1]
        # Cut at the last space that fits; a first word longer than the limit (a URL, say) is
        # kept whole rather than cut inside.
        cut = window.rsplit(None, 1)[0] if any(c.isspace() for c in window) else ""
        text = (cut or text.split(None, 1)[0]) + " …"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def serve(tracker: str, where: str, record_path: str, log_path: str, jobs: Any,
          notes: Any) -> None:
    """Run ``jobs`` against the tracker until None; after a failure, drain without sending."""
    quiet(log_path)
    path = Path(record_path)
    feed = TrackerFeed(make_sink(tracker, where), TrackerRecord.read(path), path)
    failed = False
    while (job := next_job(jobs)) is not None:
        if failed:
            continue
        try:
            _run(feed, job, notes)
        except Exception as error:
            notes.put(("failed", error_line(error)))
            failed = True
    notes.close()
    notes.join_thread()


def _run(feed: TrackerFeed, job: Job, notes: Any) -> None:
    kind, sink, record = job[0], feed.sink, feed.record
    if kind == "open":
        start: TrackerStart = job[1]
        new = record.run is None
        record.run = sink.open(record.run, start)
        record.write(feed.path)
        if new:
            sink.params(start.params)
    elif kind == "records":
        records: list[Recorded] = job[1]
        for recorded in records:
            feed.add(recorded)
        feed.send()
    elif kind == "events":
        events: list[Typed] = job[1]
        for host, event in events:
            feed.add_event(event, host)
        feed.send()
    elif kind == "close":
        state, model, log_model = job[1:]
        feed.flush_pending()
        feed.send()
        if model is not None:
            sink.model(Path(model))
        elif log_model:
            notes.put(("warning", f"{sink.name}: the final model is on its host, not here: "
                       f"`corral fetch RUN`, then `corral {sink.name} RUN` logs it"))
        sink.close(state)
