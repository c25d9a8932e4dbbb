"""Every path inside a run directory: the one place that names them.

A run lives in ``<run_root>/<run id>`` on every host and under the same path on this machine.
The trainer writes the events, checkpoints and final model there; the launcher (``remote``)
writes the per-host bookkeeping files and logs; this machine keeps ``run.json``, its copy of
every host's files and what ``corral fetch`` brought back. All of them derive their paths from
``RunLayout``, which lives in the trainer package because the trainer (pushed to the hosts,
never importing ``remote``) writes some of them.

``RunLayout()`` gives paths relative to the run directory (for shell commands that ``cd`` into
it and for the host's tailer); ``RunLayout(run_dir)`` gives them under ``run_dir``. Paths are
POSIX strings: the same text goes into a shell command line and into ``open``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

HostFile = Literal["pgid", "leader", "exit", "stopped", "ranks", "planned", "data",
                   "replicas", "replicated", "seeded"]
"""The launcher's bookkeeping files of one host, ``hosts/<host>.<kind>``: the process-group id
(``pgid``) and its leader's start time (``leader``) written at launch, the launcher's exit
status (``exit``), the mark of ``corral stop`` (``stopped``), the host's ranks as torchrun
assigned them (``ranks``) and as the launch planned them (``planned``), and the data links of
its working directory (``data``: one ``target<TAB>path`` a line, written by the data sync), and
what a script's relaunch copied into it from rank 0's host (``replicas``: the data sync's link
list of those files; ``replicated``: per path, the copy's sha256, size and modification time;
``remote/run/replicate.py``), and what the launch copied into it from the launch folder
(``seeded``: per path, the copy's size and modification time; ``remote/run/seed_cwd.py``)."""

EVENTS_NAME = re.compile(r"^rank-(\d+)\.jsonl$")
"""An event file's name inside ``metrics/``; group 1 is the rank."""

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")
"""A checkpoint file's name inside ``checkpoints/``; group 1 is the step."""


@dataclass(frozen=True)
class RunLayout:
    """The files of one run directory (``root``; empty: paths relative to it)."""

    root: str | os.PathLike[str] = ""

    METRICS = "metrics"
    """The per-rank event files (``rank-<rank>.jsonl``), written by the trainer."""
    CHECKPOINTS = "checkpoints"
    """Rank 0's checkpoints (``step-<step>.pt``), written by the trainer."""
    FINAL = "final"
    """The final model or adapter, written by rank 0 when the run completes."""
    LOGS = "logs"
    """Per host: the launcher's log and torchrun's per-rank logs."""
    HOSTS = "hosts"
    """The launcher's bookkeeping files, one set per host (``HostFile``)."""
    SCRIPT_CWD = "cwd"
    """A script run's working directories, one per host (``script_cwd``)."""
    RUN_RECORD = "run.json"
    """This machine only: what was launched where, and the run's last known state."""
    COLLECTED = "collected"
    """This machine only: the copy of each host's files, ``collected/<host>/<same layout>``."""
    FETCHED = "fetched"
    """This machine only: what ``corral fetch`` brought back."""
    MEMBERSHIP = "membership"
    """On each host: the requests that reach its ranks while they run (``leave_request``)."""
    TRACKERS = "trackers"
    """This machine only: per experiment tracker, ``<tracker>.json``, the tracker's run this
    run is logged to and the last step logged there."""
    CHECKED_MESH = "mesh.json"
    """This machine only: the run's check's measured links and estimate (what every seat's
    network view draws; ``remote.records.mesh``)."""
    COPY_OFFSETS = "offsets.json"
    """In each ``collected/<host>/``: the byte offset reached in each of the host's files."""
    COPY_LOCK = ".lock"
    """In each ``collected/<host>/``: held by the one follower that writes the copy."""

    def path(self, relative: str) -> str:
        """``relative`` inside the run directory."""
        root = os.fspath(self.root)
        return f"{root.rstrip('/')}/{relative}" if root else relative

    def events(self, rank: int | str) -> str:
        """Where rank ``rank`` writes its events (a string rank gives a pattern: ``"*"``)."""
        return self.path(f"{self.METRICS}/rank-{rank}.jsonl")

    def checkpoint(self, step: int) -> str:
        """Where the checkpoint of ``step`` goes."""
        return self.path(f"{self.CHECKPOINTS}/step-{step:08d}.pt")

    def checkpoints_glob(self) -> str:
        """A shell glob matching every checkpoint file."""
        return self.path(f"{self.CHECKPOINTS}/step-*.pt")

    def host_logs(self, host: str) -> str:
        """``host``'s log folder."""
        return self.path(f"{self.LOGS}/{host}")

    def launcher_log(self, host: str) -> str:
        """Everything ``host``'s launcher (torchrun) printed."""
        return f"{self.host_logs(host)}/launcher.log"

    def rank_logs(self, host: str) -> str:
        """torchrun's ``--log-dir`` for ``host``'s ranks."""
        return f"{self.host_logs(host)}/ranks"

    def host_file(self, host: str, kind: HostFile) -> str:
        """One of ``host``'s bookkeeping files (see ``HostFile``)."""
        return self.path(f"{self.HOSTS}/{host}.{kind}")

    def script_cwd(self, host: str) -> str:
        """The working directory of ``host``'s script ranks: a copy of the pushed user folder,
        made at launch, where the script's relative reads and writes land (one per host, so
        hosts sharing a machine never write the same file)."""
        return self.path(f"{self.SCRIPT_CWD}/{host}")

    def leave_request(self, host: str) -> str:
        """Written by ``corral leave HOST`` on ``host``: its ranks leave at the next step
        boundary (``trainer.membership.contract``)."""
        return self.path(f"{self.MEMBERSHIP}/leave-{host}")

    def tracker_record(self, tracker: str) -> str:
        """Which run of ``tracker`` (``mlflow``, ``aim``) this run is logged to, and how far."""
        return self.path(f"{self.TRACKERS}/{tracker}.json")

    def tracker_log(self, tracker: str) -> str:
        """What the process that talks to ``tracker`` printed (its client's warnings)."""
        return self.path(f"{self.TRACKERS}/{tracker}.log")

    def collected(self, host: str) -> str:
        """This machine's copy of ``host``'s files (laid out as on the host)."""
        return self.path(f"{self.COLLECTED}/{host}")


IN_RUN_DIR = RunLayout()
"""Paths relative to the run directory: for shell commands that ``cd`` into it, and for the
host's tailer."""
