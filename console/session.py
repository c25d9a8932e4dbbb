"""A headless session on one cluster: what the console app and the CLI commands share.

A session holds the parsed cluster.toml, the run controller (opened on first use and closed
with the session), the run it follows (its handle and its ``RunModel``) and the rule for the
run a command means when none is named. It draws nothing and imports no Textual: the console
app owns one and renders its model; each CLI command opens one, acts through it and closes it.
Heavy modules (asyncssh, the records) are imported only by what needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from profiles.user_errors import CorralError, UsageError

if TYPE_CHECKING:
    from console.model.run import RunModel
    from figures import RunSeries
    from remote.api import (
        ClusterConfig,
        RunController,
        RunHandle,
        RunHistory,
        RunInfo,
        RunLogLine,
        RunSummary,
    )


# ---- seams (tests replace these) ------------------------------------------------------------


def open_controller(path: Path | ClusterConfig) -> RunController:
    """The SSH run controller for the cluster file at ``path`` (or a config already read)."""
    from remote.api import open_controller as open_ssh_controller

    return open_ssh_controller(path)


def load_config(path: Path) -> ClusterConfig:
    """The parsed cluster file (``ConfigError`` for any problem in it)."""
    from remote.api import load_cluster

    return load_cluster(path)


# ---- the session ------------------------------------------------------------------------------


class Session:
    """One cluster as a front end drives it: its config, controller, followed run and model."""

    def __init__(self, config_path: Path | None = None, *, config: ClusterConfig | None = None,
                 controller: RunController | None = None, model: RunModel | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config_path = config_path
        """The cluster.toml (None: a session with no file behind it, so no recorded runs)."""
        self._config = config
        self._controller = controller
        self._model = model
        self.clock = clock
        self.handle: RunHandle | None = None
        """The run this session follows (None until it starts or attaches to one)."""

    @classmethod
    def open(cls, config_path: Path, *, controller: RunController | None = None,
             clock: Callable[[], float] = time.time) -> Session:
        """A session on ``config_path`` with a model of its cluster (hosts, policy, sizes), as
        the console shows it before any run. Raises ``CorralError`` for an unusable file."""
        from console.model.run import RunModel

        config = load_config(config_path)
        model = RunModel(cluster_name=config.cluster.name, hosts=[h.name for h in config.hosts],
                         policy=config.run.policy, total_steps=config.run.steps,
                         global_batch=config.run.global_batch)
        return cls(config_path, config=config, model=model, clock=clock,
                   controller=controller if controller is not None
                   else open_controller(config_path))

    @property
    def has_cluster(self) -> bool:
        """Whether a cluster.toml is behind the session (else it has no recorded runs)."""
        return self._config is not None or self.config_path is not None

    def _path(self) -> Path:
        if self.config_path is None:
            raise CorralError("this session has no cluster.toml")
        return self.config_path

    @property
    def config(self) -> ClusterConfig:
        """The cluster, parsed on first use."""
        if self._config is None:
            self._config = load_config(self._path())
        return self._config

    @property
    def controller(self) -> RunController:
        """The run controller, opened on first use (``aclose`` closes it)."""
        if self._controller is None:
            self._controller = open_controller(
                self._config if self._config is not None else self._path())
        return self._controller

    @property
    def model(self) -> RunModel:
        """The model the front end renders: of the cluster (``open``), else of the followed
        run alone."""
        if self._model is None:
            raise CorralError("this session follows no run yet")
        return self._model

    def log_lines(self, run_id: str) -> list[RunLogLine]:
        """Every line every host's launcher printed for run ``run_id`` (its ranks' output
        included), from this machine's copy: what the logs panel searches."""
        from remote.api import local_run_dir, run_log_lines

        info = self.runs([run_id])[0]
        return run_log_lines(local_run_dir(self.config, info.run_id), info.hosts)

    def follow_command(self, run_id: str, host: str) -> str:
        """The shell command that follows ``host``'s log of run ``run_id`` live."""
        from remote.api import follow_log_command

        return follow_log_command(self.config, run_id, host)

    def follow(self, handle: RunHandle) -> RunModel:
        """Follow ``handle`` from now on: the cluster's model forgets the previous run's numbers
        (its logs stay); a session without one gets a model of this run alone."""
        from console.model.run import RunModel

        self.handle = handle
        if self._model is None:
            self._model = RunModel.of_run(handle.run_id)
        else:
            self._model.reset_run(handle.run_id, t=self.clock(),
                                  name=getattr(handle, "name", ""))
        return self._model

    async def aclose(self) -> None:
        """Close the controller's connections if it was opened (runs keep going on the hosts)."""
        if self._controller is not None:
            await self._controller.aclose()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- which run
    def unnamed_run(self, *, live: bool = False, command: str = "stop") -> str:
        """The run meant when none is named: the one this session follows, else the newest
        recorded run of the cluster; with ``live``, one that has not ended. A ``UsageError``
        saying how to name one to ``command`` (``stop``, ``leave``, ``join``) when there is
        none."""
        model = self._model
        if model is not None and model.run_id is not None and (model.live or not live):
            return model.run_id
        if not live:
            from remote.api import find_runs

            return find_runs(self.config, [])[0].run_id
        from remote.api import FINAL_RUN_STATES

        running = [r for r in self.recorded_runs() if r.state not in FINAL_RUN_STATES]
        if not running and command == "stop":
            raise UsageError("no run of this cluster is running; name one: corral stop RUN "
                             "(see `corral status`)", title="nothing to stop")
        if not running:  # a host leaves or joins a running run only
            raise UsageError(
                f"no run of this cluster is running: a host {command}s a running run (name "
                f"one: corral {command} HOST --run RUN; see `corral status`); a run that has "
                "ended trains again on the hosts you choose with `corral run --resume RUN`",
                title=f"no run to {command}")
        return running[0].run_id

    def runs(self, wanted: Sequence[str]) -> list[RunInfo]:
        """The recorded runs ``wanted`` names (run ids, names or unique starts of an id), in
        that order; the unnamed run (``unnamed_run``) when it names none."""
        from remote.api import find_runs

        return find_runs(self.config, list(wanted) or [self.unnamed_run()])

    async def runs_as_they_ended(self, wanted: Sequence[str]) -> tuple[list[RunInfo], list[str]]:
        """``runs(wanted)``, each one nobody follows (a ``--detach`` run nobody attached to)
        asked of its hosts first, as ``corral status`` does, so that its report says how it
        ended; and the ids of those whose hosts could not be reached (record as it was)."""
        from remote.api import refresh_unfollowed

        return await refresh_unfollowed(self.config, self.runs(wanted))

    def recorded_runs(self) -> list[RunInfo]:
        """Every recorded run of the cluster on this machine, newest first (none for a session
        without a cluster.toml)."""
        if not self.has_cluster:
            return []
        from remote.api import list_runs

        return list_runs(self.config)

    def summary(self, run_id: str) -> tuple[RunHistory, RunSummary, RunSeries]:
        """Run ``run_id``'s recorded events and what ``corral report`` makes of them."""
        from remote.api import load_history, local_run_dir, summarize

        if not self.has_cluster:
            raise CorralError(f"no records of run {run_id} on this machine")
        history = load_history(local_run_dir(self.config, run_id))
        return history, *summarize(history)
