"""The process that talks to one tracker for a follower: the tracker's client runs there.

MLflow's store costs about 0.2 ms of CPU per value it stores (SQLAlchemy), and importing it
seconds: in a process of its own that work neither takes the follower's CPU nor holds its
interpreter lock, and a tracker stuck on a dead server holds nothing but itself. The follower
(``remote.records.tracking.TrackerWriter``) sends it jobs in order over a queue; it sends back
notes (a warning, or that it gave the tracker up), and records in
``<run dir>/trackers/<tracker>.json`` the tracker's run id and the last step and evaluation
the tracker has, so that the next follower or ``corral mlflow`` continues from there.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote.records.tracker_sinks import AimSink, MlflowSink, Point, Sink, TrackerStart

Job = tuple[Any, ...]
"""``("open", TrackerStart)``, ``("metrics", points, step, eval_step)``, ``("text", step,
name, text)``, ``("model", path)``, ``("no_model",)``, ``("close", state)``; None ends."""
Note = tuple[str, str]
"""``("failed", why)`` (nothing more is sent) or ``("warning", line)``."""


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


def serve(tracker: str, where: str, record_path: str, log_path: str, jobs: Any,
          notes: Any) -> None:
    """Run ``jobs`` against the tracker until None; after a failure, drain without sending."""
    quiet(log_path)
    sink = make_sink(tracker, where)
    path = Path(record_path)
    record = TrackerRecord.read(path)
    failed = False
    while (job := jobs.get()) is not None:
        if failed:
            continue
        try:
            _run(sink, job, record, path, notes)
        except Exception as error:
            text = str(error).splitlines()[0][:120] if str(error) else ""
            notes.put(("failed", f"{type(error).__name__}: {text}" if text
                       else type(error).__name__))
            failed = True
    notes.close()
    notes.join_thread()


def _run(sink: Sink, job: Job, record: TrackerRecord, path: Path, notes: Any) -> None:
    kind = job[0]
    if kind == "open":
        start: TrackerStart = job[1]
        new = record.run is None
        record.run = sink.open(record.run, start)
        record.write(path)
        if new:
            sink.params(start.params)
    elif kind == "metrics":
        points: list[Point] = job[1]
        sink.metrics(points)
        record.step, record.eval = job[2], job[3]
        record.write(path)
    elif kind == "text":
        sink.text(job[1], job[2], job[3])
    elif kind == "model":
        sink.model(Path(job[1]))
    elif kind == "no_model":
        notes.put(("warning", f"{sink.name}: the final model is on its host, not here: "
                   f"`corral fetch RUN`, then `corral {sink.name} RUN` logs it"))
    elif kind == "close":
        sink.close(job[1])
