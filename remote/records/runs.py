"""Run ids and the local run registry (``corral status``).

Every run has a unique id ``<cluster>-<UTC time>-<random>``; the id names its directory
``<run_root>/<run_id>`` on every host and on this machine. Locally that directory holds
``run.json`` (what was launched where, and the run's last known state) and ``collected/``
(the copy of every event and log line received from the hosts).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig
from remote.config.read import read_limited
from remote.events import FINAL_RUN_STATES, StopReport
from remote.records.disk_full import LOCAL, disk_full
from remote.records.owner import owner_gone, owner_pid
from remote.records.private import private_dir, write_private
from trainer.run_layout import RunLayout

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
    cleanup: str = ""
    """What the last ``corral stop`` (or status check) found and did, kept apart from ``state``
    (the outcome): stopping a run that had already completed or failed leaves its outcome."""
    suspect_hosts: tuple[str, ...] = ()
    """Hosts where processes of the run may still be alive although it has an outcome: cut off
    when it ended, unreachable for a stop, or a stop left processes. ``corral status`` looks
    there again until none is left."""
    membership_port: int = 0
    """The port on the master where rank 0 serves the membership store of live joins and
    leaves (``CORRAL_MEMBERSHIP_PORT``); 0: none (a script run as is, or a run launched before
    live membership)."""
    left_hosts: tuple[str, ...] = ()
    """Hosts that left the running run live (``corral leave``, or lost and taken out by the
    survivors): no longer in ``hosts``; ``corral join`` may bring one back, ``stop`` still
    looks there."""
    ranks: dict[str, list[int]] | None = None
    """Per host: its global ranks as the launch planned them (known without any event: what
    ``corral report`` shows of a script run as is)."""
    ended: float = 0.0
    """Unix time its outcome (completed, failed, stopped) was recorded; 0 before."""
    owner: str = ""
    """The corral process launching or following it (``remote.records.owner``): a record left
    in a launch state by a corral that is gone is recorded failed by the next command that
    reads it, and once its hosts started, ``FOLLOWING_LOST`` (``corral attach`` adopts it)."""
    script: list[str] | None = None
    """A script run's ``[script, code folder, launch_dir, *args]`` as launched (``--resume``
    without ``--script`` runs it again); None for a task run."""
    checked: dict[str, Any] | None = None
    """What the launch's check found that a joiner must share (``remote/run/join_match.py``:
    torch by host, backend, precision by host); None: launched before it was recorded."""

    @property
    def label(self) -> str:
        """The name when there is one, else the run id: what headers and reports show."""
        return self.name or self.run_id

    @property
    def wall_s(self) -> float | None:
        """Seconds from the first launch to the recorded outcome (None while it has none):
        the run's wall time as ``corral report`` and every console seat say it."""
        return self.ended - self.started if self.ended > self.started else None


def run_id_prefix(cluster_name: str) -> str:
    """How every run id of ``cluster_name`` starts: its name in safe characters and a dash."""
    return (re.sub(r"[^A-Za-z0-9]+", "-", cluster_name).strip("-")[:32] or "run") + "-"


def new_run_id(cluster_name: str) -> str:
    """A fresh run id: the cluster name (safe characters only), UTC time and 6 random hex digits."""
    return (f"{run_id_prefix(cluster_name)}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-"
            f"{secrets.token_hex(3)}")


def validate_run_id(run_id: str) -> str:
    """``run_id`` if it is a well-formed run id (it reaches shells and process patterns)."""
    if not RUN_ID_RE.match(run_id):
        raise CorralError(f"{run_id!r} is not a run id (see `corral status` for the runs)")
    return run_id


KNOWN_IDS_SHOWN = 8
"""How many known run ids an unknown-id error lists."""


def resolve_run_id(config: ClusterConfig, text: str) -> str:
    """The recorded run ``text`` names (see ``find_runs``: a run id, a run name or a unique
    start of a run id). Anything else is a ``UsageError`` listing the known runs, so a typo
    never acts on (or records) a run that is not the one meant."""
    return find_runs(config, [text])[0].run_id


def local_run_root(config: ClusterConfig) -> Path:
    """``[cluster] run_root`` on this machine."""
    return Path(config.cluster.run_root).expanduser()


def run_dir_for(config: ClusterConfig, run_id: str) -> str:
    """``<run_root>/<run_id>`` with ``~`` unexpanded (each host expands it for itself)."""
    return f"{config.cluster.run_root.rstrip('/')}/{run_id}"


def local_run_dir(config: ClusterConfig, run_id: str) -> Path:
    """This machine's directory of run ``run_id``."""
    return local_run_root(config) / validate_run_id(run_id)


def write_run_info(config: ClusterConfig, info: RunInfo) -> None:
    """Record ``info`` atomically in the run's local ``run.json``."""
    _write_at(local_run_dir(config, info.run_id), info)


def _write_at(directory: Path, info: RunInfo) -> None:
    tmp = directory / f".{RunLayout.RUN_RECORD}.{os.getpid()}.tmp"
    try:
        private_dir(directory)
        write_private(tmp, json.dumps(asdict(info), indent=1) + "\n")
        os.replace(tmp, directory / RunLayout.RUN_RECORD)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise disk_full(LOCAL, str(directory)) from None
        raise CorralError(f"cannot record run {info.run_id} in {directory}: "
                          f"{exc.strerror or exc}; set [cluster] run_root to a writable "
                          "directory", title="run_root not usable") from None


def read_run_info_at(directory: Path) -> RunInfo:
    """The ``run.json`` in a run's local ``directory``; CorralError when there is none.

    Fields this version does not know (written by a newer corral) are ignored.
    """
    path = directory / RunLayout.RUN_RECORD
    data: Any = None
    problem: str | None = None
    try:
        raw = read_limited(path, RUN_RECORD_MAX_BYTES)
        if raw is None:
            problem = f"more than {RUN_RECORD_MAX_BYTES >> 20} MiB"
        else:
            data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CorralError(
            f"no run {directory.name!r} recorded under {directory.parent} "
            f"({exc.__class__.__name__}); see `corral status` for the runs of this cluster"
        ) from None
    except RecursionError:
        problem = "nested too deeply"
    problem = problem or record_problem(data)
    if problem is not None:
        raise CorralError(f"{path} is not a run record ({problem}): the run is skipped; "
                          "move the file away or restore it", title="bad run record")
    known = {f.name for f in fields(RunInfo)}
    data = {key: value for key, value in data.items() if key in known}
    data["hosts"] = tuple(data["hosts"])
    data["suspect_hosts"] = tuple(data.get("suspect_hosts", ()))
    data["left_hosts"] = tuple(data.get("left_hosts", ()))
    return _abandoned_launch_failed(directory, RunInfo(**data))


LAUNCH_STATES = ("checking", "pushing", "launching", "restarting")
"""Recorded states in which a corral process is launching the run (``RunInfo.owner``)."""


FOLLOWING_LOST = "following lost"
"""How a record begins its detail once the corral following the run ended after the hosts
started (killed, its machine asleep): the run may still train, and ``corral attach`` adopts it."""


def unfollowed(info: RunInfo) -> bool:
    """Whether no corral process follows ``info``, recorded as running: launched with
    ``--detach`` (or detached from) and nobody attached since, or its follower lost. Its
    record says nothing of how it ended; only its hosts (or ``corral attach``) can."""
    return info.state == "running" and (
        not info.owner or info.detail.startswith(FOLLOWING_LOST))


def _abandoned_launch_failed(directory: Path, info: RunInfo) -> RunInfo:
    """``info``, settled when the corral launching it is gone: killed mid-launch, it never
    recorded an outcome, and nothing else would. Before every host started, ``failed`` (with
    why); once they all did (its process groups are recorded), still ``running`` with
    ``FOLLOWING_LOST`` in its detail: nobody follows it, but it may well train on."""
    started = info.state == "running" or (info.state == "launching" and bool(info.pgids))
    if (info.state not in (*LAUNCH_STATES, "running") or not info.owner
            or info.detail.startswith(FOLLOWING_LOST) or not owner_gone(info.owner)):
        return info
    pid = owner_pid(info.owner)
    if started:
        settled = replace(info, state="running", detail=(
            f"{FOLLOWING_LOST}: the corral that launched it (pid {pid}) ended after the hosts "
            f"started; it may still train: `corral attach {info.run_id}` follows it, `corral "
            f"stop {info.run_id}` ends it"))
    else:
        settled = replace(
            info, state="failed", ended=time.time(), suspect_hosts=info.hosts,
            detail=(f"the corral launching it (pid {pid}) ended while it was "
                    f"{info.state}; whatever it started may still run: `corral stop "
                    f"{info.run_id}` ends it"))
    with contextlib.suppress(OSError, CorralError):
        _write_at(directory, settled)
    return settled


RUN_RECORD_MAX_BYTES = 1 << 20
"""The largest ``run.json`` read (1 MiB; a record of a thousand hosts is far smaller): a
larger one (a device, a wrong file) is named and skipped, not read for ever."""
LATEST_TIME = 253_402_300_799.0
"""The last second of the year 9999: a recorded time beyond it (or before 1970, or NaN) is not
one (``time.gmtime`` and every date shown would fail on it)."""
PID_MAX = 1 << 22
"""The most process ids Linux hands out (``pid_max``'s ceiling): a recorded process group is
above 1 (init) and at most this; a stop signals ``-PGID``, so a 0 or -1 must never pass."""
RANK_MAX = 1 << 20
"""More ranks than any run has: a recorded rank is a whole number below it."""
_NUMBER = (int, float)
RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "cluster": (str,), "state": (str,), "started": _NUMBER,
    "hosts": (list,), "config_path": (str,), "master_addr": (str,), "port": (int,),
    "pgids": (dict, type(None)), "code_digest": (str,), "detail": (str,), "name": (str,),
    "cleanup": (str,), "suspect_hosts": (list,), "ranks": (dict, type(None)),
    "ended": _NUMBER, "owner": (str,), "membership_port": (int,), "left_hosts": (list,),
    "checked": (dict, type(None)),
}
"""What each ``run.json`` field must hold (JSON types); a record that breaks one is named and
skipped by every command (``tests/remote/test_run_record_validation.py``)."""
REQUIRED = ("run_id", "cluster", "state", "started", "hosts")


def record_problem(data: object) -> str | None:
    """What is wrong with a parsed ``run.json`` (naming the key), or None when it is sound."""
    if not isinstance(data, dict):
        return f"it holds {type(data).__name__}, not an object"
    for key in REQUIRED:
        if key not in data:
            return f"no {key!r}"
    for key, kinds in RECORD_TYPES.items():
        value = data.get(key)
        if key in data and (not isinstance(value, kinds) or isinstance(value, bool)):
            return f"{key!r} is {value!r:.40}, not {' or '.join(k.__name__ for k in kinds)}"
    if (problem := _number_problem(data)) is not None:
        return problem
    lists = [data["hosts"], data.get("suspect_hosts", []), data.get("left_hosts", [])]
    if any(not isinstance(h, str) for names in lists for h in names):
        return "a host name is not a string"
    if any(not isinstance(v, int) or isinstance(v, bool) or not 1 < v <= PID_MAX
           for v in (data.get("pgids") or {}).values()):
        return f"a process group id is not an integer in 2..{PID_MAX}"
    if any(not isinstance(v, list) or not all(isinstance(r, int) and not isinstance(r, bool)
                                              and 0 <= r < RANK_MAX for r in v)
           for v in (data.get("ranks") or {}).values()):
        return "a host's ranks are not a list of whole numbers from 0"
    return None


def _number_problem(data: dict[str, object]) -> str | None:
    """What is wrong with a record's times and port (their types already checked), or None:
    NaN, infinite, negative or beyond the year 9999 is no time."""
    for key in ("started", "ended"):
        value = data.get(key, 0.0)
        if isinstance(value, (int, float)) and not 0.0 <= value <= LATEST_TIME:
            return f"{key!r} is {value!r:.40}, not a time (seconds since 1970)"
    port = data.get("port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        return f"'port' is {port!r:.40}, not a port number"
    return None


def read_run_info(config: ClusterConfig, run_id: str) -> RunInfo:
    """The recorded ``run.json`` of ``run_id``; CorralError when there is none."""
    return read_run_info_at(local_run_dir(config, run_id))


def describe_stop(report: StopReport, *, when: float | None = None) -> str:
    """One line for a stop report: ``nothing left`` or which hosts kept how many processes."""
    stamp = time.strftime(" (%Y-%m-%d %H:%M:%S UTC)", time.gmtime(when)) if when else ""
    if report.clean:
        return "stopped: no process left on any host" + stamp
    parts = [f"{count} process(es) left on {host}" for host, count in
             sorted(report.remaining.items()) if count]
    parts += [f"{host} unreachable" for host in report.unreachable]
    parts += [f"{host} not verified (its container engine did not answer)"
              for host in report.unverified]
    return "stop incomplete: " + ", ".join(parts) + stamp


def list_runs(config: ClusterConfig) -> list[RunInfo]:
    """Every recorded run of this cluster, newest first."""
    root = local_run_root(config)
    runs: list[RunInfo] = []
    if not root.is_dir():
        return runs
    for entry in root.iterdir():
        if not (entry / RunLayout.RUN_RECORD).is_file() or not RUN_ID_RE.match(entry.name):
            continue
        try:
            info = read_run_info(config, entry.name)
        except CorralError:
            continue
        if info.cluster == config.cluster.name:
            runs.append(info)
    return sorted(runs, key=lambda r: r.started, reverse=True)


def bad_records(config: ClusterConfig) -> list[str]:
    """``<file> is not a run record (<problem>)`` for each run directory whose ``run.json``
    cannot be read: what every command that lists runs names, then skips."""
    root = local_run_root(config)
    problems = []
    for entry in sorted(root.glob(f"*/{RunLayout.RUN_RECORD}")) if root.is_dir() else []:
        try:
            read_run_info_at(entry.parent)
        except CorralError as exc:
            problems.append(exc.message.split(": the run is skipped")[0])
    return problems


def skipped_records(config: ClusterConfig) -> str:
    """`` (skipped: ...)`` naming ``bad_records`` (empty when none), for ``find_runs``'s
    errors."""
    problems = bad_records(config)
    return f" (skipped: {'; '.join(problems)})" if problems else ""


def find_runs(config: ClusterConfig, wanted: list[str]) -> list[RunInfo]:
    """The runs ``wanted`` names, in that order: each a run id, a run name (its newest run)
    or a unique start of a run id; the newest run when ``wanted`` is empty.

    A name that matches no run raises a ``UsageError`` that lists what there is.
    """
    runs = list_runs(config)
    if not runs:
        raise UsageError(f"no runs of cluster {config.cluster.name!r} under "
                         f"{local_run_root(config)}{skipped_records(config)}; start one with "
                         "`corral run`", title="no runs")
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
                             f"{known}){skipped_records(config)}; see `corral status`",
                             title="unknown run")
        chosen.append(match[0])
    return chosen


def newer_unfinished_runs(config: ClusterConfig, than: RunInfo) -> list[RunInfo]:
    """The runs of this cluster started after ``than`` that have no outcome recorded (their
    processes may still run), newest first."""
    return [r for r in list_runs(config)
            if r.started > than.started and r.state not in FINAL_RUN_STATES]
