"""Run ids and the local run registry (``corral status``).

Every run has a unique id ``<cluster>-<UTC time>-<random>``; the id names its directory
``<run_root>/<run_id>`` on every host and on this machine. Locally that directory holds
``run.json`` (what was launched where, and the run's last known state) and ``collected/``
(the copy of every event and log line received from the hosts).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from profiles.errors import CorralError, UsageError
from remote.config import ClusterConfig
from remote.pool import HostPool

RUN_FILE = "run.json"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """One run as recorded on this machine."""

    run_id: str
    cluster: str
    """``[cluster] name`` of the cluster.toml that started it."""
    state: str
    """Last known ``RunState`` (``launching``, ``running``, ``completed``, ...)."""
    started: float
    """Unix time of the (first) launch."""
    hosts: tuple[str, ...]
    config_path: str = ""
    master_addr: str = ""
    port: int = 0
    pgids: dict[str, int] | None = None
    """Per host: the process group of its launcher, once launched."""
    code_digest: str = ""
    detail: str = ""
    name: str = ""
    """The run's name (``corral run --name``, ``[run] name``); empty when none was given."""

    @property
    def label(self) -> str:
        """The name when there is one, else the run id: what headers and reports show."""
        return self.name or self.run_id


def new_run_id(cluster_name: str) -> str:
    """A fresh run id: the cluster name (safe characters only), UTC time and 6 random hex digits."""
    safe = re.sub(r"[^A-Za-z0-9]+", "-", cluster_name).strip("-")[:32] or "run"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def validate_run_id(run_id: str) -> str:
    """``run_id`` if it is a well-formed run id (it reaches shells and process patterns)."""
    if not RUN_ID_RE.match(run_id):
        raise CorralError(f"{run_id!r} is not a run id (see `corral status` for the runs)")
    return run_id


def local_run_root(config: ClusterConfig) -> Path:
    """``[cluster] run_root`` on this machine."""
    return Path(config.cluster.run_root).expanduser()


def local_run_dir(config: ClusterConfig, run_id: str) -> Path:
    """This machine's directory of run ``run_id``."""
    return local_run_root(config) / validate_run_id(run_id)


def write_run_info(config: ClusterConfig, info: RunInfo) -> None:
    """Record ``info`` atomically in the run's local ``run.json``."""
    directory = local_run_dir(config, info.run_id)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(info), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, directory / RUN_FILE)


def read_run_info_at(directory: Path) -> RunInfo:
    """The ``run.json`` in a run's local ``directory``; CorralError when there is none.

    Fields this version does not know (written by a newer corral) are ignored.
    """
    path = directory / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(RunInfo)}
        data = {key: value for key, value in data.items() if key in known}
        data["hosts"] = tuple(data["hosts"])
        return RunInfo(**data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CorralError(
            f"no run {directory.name!r} recorded under {directory.parent} "
            f"({exc.__class__.__name__}); see `corral status` for the runs of this cluster"
        ) from None


def read_run_info(config: ClusterConfig, run_id: str) -> RunInfo:
    """The recorded ``run.json`` of ``run_id``; CorralError when there is none."""
    return read_run_info_at(local_run_dir(config, run_id))


def update_run_state(config: ClusterConfig, run_id: str, state: str, detail: str = "") -> None:
    """Set the recorded state of ``run_id`` (ignored if the run is not recorded)."""
    try:
        info = read_run_info(config, run_id)
    except CorralError:
        return
    write_run_info(config, replace(info, state=state, detail=detail or info.detail))


def list_runs(config: ClusterConfig) -> list[RunInfo]:
    """Every recorded run of this cluster, newest first."""
    root = local_run_root(config)
    runs: list[RunInfo] = []
    if not root.is_dir():
        return runs
    for entry in root.iterdir():
        if not (entry / RUN_FILE).is_file() or not RUN_ID_RE.match(entry.name):
            continue
        try:
            info = read_run_info(config, entry.name)
        except CorralError:
            continue
        if info.cluster == config.cluster.name:
            runs.append(info)
    return sorted(runs, key=lambda r: r.started, reverse=True)


def find_runs(config: ClusterConfig, wanted: list[str]) -> list[RunInfo]:
    """The runs ``wanted`` names, in that order: each a run id, a run name (its newest run)
    or a unique start of a run id; the newest run when ``wanted`` is empty.

    A name that matches no run raises a ``UsageError`` that lists what there is.
    """
    runs = list_runs(config)
    if not runs:
        raise UsageError(f"no runs of cluster {config.cluster.name!r} under "
                         f"{local_run_root(config)}; start one with `corral run`",
                         title="no runs")
    if not wanted:
        return [runs[0]]
    chosen = []
    for spec in wanted:
        match = ([r for r in runs if r.run_id == spec] or [r for r in runs if r.name == spec]
                 or [r for r in runs if r.run_id.startswith(spec)])
        if len({r.run_id for r in match}) > 1 and not any(r.name == spec for r in match):
            ids = ", ".join(r.run_id for r in match[:5])
            raise UsageError(f"{spec!r} matches several runs ({ids}); give more of the id",
                             title="ambiguous run")
        if not match:
            known = ", ".join(r.name or r.run_id for r in runs[:5])
            raise UsageError(f"no run {spec!r} in cluster {config.cluster.name!r} (newest: "
                             f"{known}); see `corral status`", title="unknown run")
        chosen.append(match[0])
    return chosen


def newest_run(config: ClusterConfig) -> RunInfo:
    """The most recently started run of this cluster (for ``--resume``)."""
    runs = list_runs(config)
    if not runs:
        raise CorralError(
            f"no earlier run of cluster {config.cluster.name!r} under {local_run_root(config)} "
            "to resume; start one with `corral run`"
        )
    return runs[0]


async def refresh_runs(config: ClusterConfig, pool: HostPool) -> list[RunInfo]:
    """``list_runs``, with every run not in a final state re-examined on its hosts
    (see ``refresh_runs_report``)."""
    return (await refresh_runs_report(config, pool))[0]


async def refresh_runs_report(config: ClusterConfig, pool: HostPool
                              ) -> tuple[list[RunInfo], list[str]]:
    """``list_runs``, with every run not in a final state re-examined on its hosts, and the
    ids of the runs that could not be (a host unreachable): those keep their recorded state.

    A run whose follower went away keeps its last recorded state; this asks the hosts: any
    process of the run left means ``running``; otherwise the launchers' exit files decide
    (``completed`` when all exited 0, ``stopped`` when ``corral stop`` ended them, else
    ``failed``). Unreachable hosts leave the recorded state as it is.
    """
    from remote.api import FINAL_RUN_STATES
    from remote.stop import run_pattern
    from remote.transport import Transport, shell_path

    runs = list_runs(config)

    async def probe(transport: Transport, info: RunInfo) -> tuple[int, str, bool]:
        name = transport.host.name
        run_dir = shell_path(f"{config.cluster.run_root.rstrip('/')}/{info.run_id}")
        script = (f"pgrep -f {shlex.quote(run_pattern(info.run_id))} | wc -l; "
                  f"cd {run_dir} 2>/dev/null && cat {shlex.quote(f'hosts/{name}.exit')} "
                  f"2>/dev/null; echo; test -e {shlex.quote(f'hosts/{name}.stopped')} "
                  "&& echo stopped; true")
        lines = (await transport.run(script, timeout=30.0)).stdout.split("\n")
        return int(lines[0].strip() or 0), lines[1].strip(), "stopped" in lines[2:]

    refreshed: list[RunInfo] = []
    unverified: list[str] = []
    for info in runs:
        if info.state in FINAL_RUN_STATES:
            refreshed.append(info)
            continue
        found = await pool.gather(lambda t, i=info: probe(t, i), list(info.hosts))  # type: ignore[misc]
        if any(isinstance(r, BaseException) for r in found.values()):
            refreshed.append(info)
            unverified.append(info.run_id)
            continue
        results = [r for r in found.values() if not isinstance(r, BaseException)]
        if any(count for count, _, _ in results):
            state = "running"
        elif any(stopped for _, _, stopped in results):
            state = "stopped"
        elif all(code == "0" for _, code, _ in results):
            state = "completed"
        else:
            state = "failed"
        if state != info.state:
            info = replace(info, state=state)
            write_run_info(config, info)
        refreshed.append(info)
    return refreshed, unverified
