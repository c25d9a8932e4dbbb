"""The experiment trackers a run's figures go to: MLflow and Aim, each through its own client.

A sink is the only code that touches a tracker's package; it is imported when a run uses the
tracker, and every call runs on the writer's background thread (``remote.records.tracking``),
so a slow or dead tracker never holds the follower. Values arrive named as in
``remote.records.scalars``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from profiles.user_errors import UsageError
from remote.records.tracker_packages import MISSING, installed

TrackedPoint = tuple[int, float, str, float]
"""``(step, unix time, name, value)``."""

MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
"""A run's final state as MLflow names it."""
HTTP_RETRIES = "2"
"""MLflow retries a failed request this many times (its default, 7, backs off for minutes)."""
BATCH_METRICS = 1000
"""MLflow accepts at most this many metrics (and 100 params) in one batch."""
BATCH_PARAMS = 100


@dataclass(frozen=True, kw_only=True)
class TrackerStart:
    """What a tracker's run is opened with."""

    experiment: str
    name: str
    """The run's name in the tracker (corral's name, else its id)."""
    tags: dict[str, str]
    params: dict[str, str]


class Sink(Protocol):
    """One tracker's client, as the writer drives it (every call may raise)."""

    name: str

    def open(self, resume: str | None, start: TrackerStart) -> str:
        """Open the tracker's run ``resume`` (None: a new one); its id."""

    def params(self, params: dict[str, str]) -> None: ...

    def metrics(self, points: list[TrackedPoint]) -> None: ...

    def text(self, step: int, name: str, text: str) -> None: ...

    def model(self, directory: Path) -> None:
        """Log the final model's folder."""

    def close(self, state: str | None) -> None:
        """End the run with corral's final state (None: leave it running, to be continued)."""


class MlflowSink:
    """A run in MLflow's tracking store (``sqlite:///``, a directory, or a server)."""

    name = "mlflow"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.run_id = ""
        self._client: Any = None

    def open(self, resume: str | None, start: TrackerStart) -> str:
        if self.uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
        elif "://" not in self.uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the user chose a folder
        from mlflow.tracking import MlflowClient

        for logger in ("mlflow", "alembic"):  # their INFO lines would break the console
            logging.getLogger(logger).setLevel(logging.WARNING)

        self._client = client = MlflowClient(tracking_uri=self.uri)
        if resume:
            client.update_run(resume, status="RUNNING")
            self.run_id = resume
            return resume
        experiment = client.get_experiment_by_name(start.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         client.create_experiment(start.experiment,
                                                  artifact_location=self._artifacts()))
        run = client.create_run(experiment_id, run_name=start.name, tags=start.tags)
        self.run_id = run.info.run_id
        return self.run_id

    def _artifacts(self) -> str | None:
        """Artifacts of a ``sqlite:///`` store go next to its file (MLflow's default is the
        current directory's ``mlruns``)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return (Path(self.uri.removeprefix("sqlite:///")).resolve().parent
                / "mlartifacts").as_uri()

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:6000]) for key, value in params.items()]
        for at in range(0, len(items), BATCH_PARAMS):
            self._client.log_batch(self.run_id, params=items[at:at + BATCH_PARAMS])

    def metrics(self, points: list[TrackedPoint]) -> None:
        from mlflow.entities import Metric

        items = [Metric(name, value, int(t * 1000), step) for step, t, name, value in points]
        for at in range(0, len(items), BATCH_METRICS):
            self._client.log_batch(self.run_id, metrics=items[at:at + BATCH_METRICS],
                                   synchronous=True)

    def text(self, step: int, name: str, text: str) -> None:
        self._client.log_text(self.run_id, text + "\n", f"{name}/step-{step:08d}.txt")

    def model(self, directory: Path) -> None:
        self._client.log_artifacts(self.run_id, str(directory), "model")

    def close(self, state: str | None) -> None:
        if state is not None:
            self._client.set_terminated(self.run_id, MLFLOW_STATUS.get(state, "FAILED"))


class AimSink:
    """A run in an Aim repository."""

    name = "aim"

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self._run: Any = None

    def open(self, resume: str | None, start: TrackerStart) -> str:
        logging.getLogger("aim").setLevel(logging.WARNING)
        import aim

        Path(self.repo).mkdir(parents=True, exist_ok=True)
        self._run = run = aim.Run(run_hash=resume, repo=self.repo, experiment=start.experiment,
                                  system_tracking_interval=None, log_system_params=False)
        if resume is None:
            run.name = start.name
            for key, value in start.tags.items():
                run[key.replace(".", "_")] = value
        run["outcome"] = "running"
        return str(run.hash)

    def params(self, params: dict[str, str]) -> None:
        self._run["params"] = dict(params)

    def metrics(self, points: list[TrackedPoint]) -> None:
        for step, _t, name, value in points:
            self._run.track(value, name=name, step=step)

    def text(self, step: int, name: str, text: str) -> None:
        import aim

        self._run.track(aim.Text(text), name=name, step=step)

    def model(self, directory: Path) -> None:
        self._run["final_model"] = str(directory)  # Aim keeps no files here: say where it is

    def close(self, state: str | None) -> None:
        if state is not None:
            self._run["outcome"] = state
        self._run.close()


def sinks_for(mlflow: str | None, aim: str | None) -> list[tuple[str, str]]:
    """``(tracker, where)`` of each tracker ``[tracking]`` names (UsageError naming a missing
    extra)."""
    wanted = [(name, where) for name, where in (("mlflow", mlflow), ("aim", aim)) if where]
    for name, _ in wanted:
        if not installed(name):
            raise UsageError(MISSING[name], title=f"no {name}")
    return wanted
