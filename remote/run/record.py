"""A run's ``run.json`` as its lifecycle writes it: the one writer of a run's record.

Every change to a recorded run goes through a ``RunRecord``: the loop's moves (its state and
detail, as ``remote/run/decide.py`` asks and ``SshRunHandle._perform`` writes), the launch's
facts (master, port, process groups), the hosts a run goes on without, what a stop or a
follower found left on the hosts, and what ``corral status`` learns on the hosts
(``recorded_refresh``). ``remote/records/runs.py`` only reads and writes the file; deciding
what goes in it is done here.

A resumed run's record is *held*: nothing is written until its launch starts a host, so a
refused or failed check (another run still live, a host unreachable) leaves the earlier run's
record as it was, byte for byte, instead of recording it as failed for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import replace
from typing import Any

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES, StopReport
from remote.records.owner import this_owner
from remote.records.runs import (
    FOLLOWING_LOST,
    RunInfo,
    describe_stop,
    local_run_dir,
    read_run_info,
    unfollowed,
    write_run_info,
)
from remote.run.record_changes import (
    ClearStopMark,
    RecordAdopted,
    RecordChange,
    RecordCleanup,
    RecordDetached,
    RecordDropped,
    RecordForgotten,
    RecordLaunched,
    RecordMembers,
    RecordState,
    RecordSuspects,
    suspects_after,
)
from remote.run.restart_policy import owner_relaunched

STOP_ASKED = ".stop-asked"
"""A file in the run's local directory: a ``corral stop`` (of another process) asked the run
to stop. The corral launching it reads it between steps of its check, push and launch, ends
the launch and stops what started (a state in ``run.json`` would be overwritten by its moves).
"""

OWNER_POLL_S = 0.5
"""How often a follower reads the record while the corral launching the run decides."""


class RunRecord:
    """The recorded ``run.json`` of one run (``info`` is what it says, or will say)."""

    def __init__(self, config: ClusterConfig, info: RunInfo, *, held: bool = False,
                 outcome_kept: bool = False) -> None:
        self._config = config
        self.info = info
        self._held = held
        """A resumed run's record before its launch started a host: left untouched."""
        self._outcome_kept = outcome_kept
        """Following a run that had already ended: its recorded state and detail stay (what
        is found left on its hosts is still recorded)."""
        self._forgotten = False
        """A refused launch: nothing is recorded for it any more."""
        self._hosts_started = False
        """Its launch started the hosts: a record that cannot be written no longer ends the
        loop (its ranks would train on unfollowed) but is said (``write_error``)."""
        self._unwritten: dict[str, Any] = {}
        """Changes a failed write left out of ``run.json`` (this machine's disk full): the next
        write carries them, so the record never keeps hosts the ranks no longer train with."""
        self.write_error: str | None = None
        """Why ``run.json`` could not be written once the hosts were started (first time): the
        follower ends the run for it, the hosts stopped (``remote.run.follower``)."""
        self._adopted = False
        """This process adopted the run (``adopt``): no other corral relaunches it."""

    @classmethod
    def new(cls, config: ClusterConfig, info: RunInfo) -> RunRecord:
        """A new run's record, written at once (``status`` lists a run from its check on)."""
        write_run_info(config, info)
        return cls(config, info)

    def change(self, **changes: Any) -> None:
        """Apply ``changes`` to the record as it is on disk (another process, ``corral stop``,
        may have added its cleanup since); only in memory while held, never once forgotten."""
        self.info = replace(self.info, **changes)
        if self._held or self._forgotten:
            return
        try:
            current = read_run_info(self._config, self.info.run_id)
        except CorralError:
            return  # not recorded (any more): nothing to update
        self._unwritten.update(changes)  # with those a failed write left out (a full disk)
        self.info = replace(current, **self._unwritten)
        if self._write():
            self._unwritten.clear()

    def _write(self) -> bool:
        """``write_run_info``; once the hosts were started, a failure is kept, not raised.
        Whether it was written."""
        try:
            write_run_info(self._config, self.info)
        except CorralError as exc:
            if not self._hosts_started:
                raise
            self.write_error = self.write_error or str(exc)
            return False
        return True

    def apply(self, change: RecordChange) -> None:
        """Make ``change`` (what the loop's ``decide`` asked for)."""
        if isinstance(change, RecordState):
            self.state(change.state, change.detail)
        elif isinstance(change, RecordLaunched):
            self.launched(**change.facts)
        elif isinstance(change, RecordSuspects):
            self.suspects(set(change.hosts))
        elif isinstance(change, RecordCleanup):
            self.cleanup(change.report)
        elif isinstance(change, RecordDetached):
            self.detached()
        elif isinstance(change, RecordForgotten):
            self.forget()
        elif isinstance(change, RecordAdopted):
            self.adopt()
        elif isinstance(change, ClearStopMark):
            self.clear_stop()
        elif isinstance(change, RecordMembers):
            self.change(hosts=change.hosts, left_hosts=change.left)
            if change.cut_off:  # followed until clean: status, check and run finish them
                suspects = set(self.recorded().suspect_hosts) | set(change.cut_off)
                self.change(suspect_hosts=tuple(sorted(suspects)), cleanup=change.cleanup)
        elif isinstance(change, RecordDropped):
            suspects = set(self.recorded().suspect_hosts) | change.dropped
            self.change(hosts=change.hosts, suspect_hosts=tuple(sorted(suspects)))
        else:
            self.ask_stop()

    def state(self, state: str, detail: str = "") -> None:
        """The run's state, and the first line of ``detail`` (kept as it was when empty)."""
        if self._outcome_kept:
            return
        line = detail.split("\n", 1)[0]
        ended = self.info.ended
        if state in FINAL_RUN_STATES:  # a second follower keeps the first outcome's time
            first = self.recorded()
            ended = first.ended if first.state in FINAL_RUN_STATES and first.ended else time.time()
        self.change(state=state, detail=line or self.info.detail, ended=ended)

    def launched(self, **facts: Any) -> None:
        """Every host's launcher started: the launch's ``facts`` (master, port, process
        groups, code digest); a held record is written from here on."""
        self._hosts_started = True
        if self._held:
            self._held = False
            self.info = replace(self.info, **facts)
            self._write()
        else:
            self.change(**facts)

    def adopt(self) -> None:
        """This process follows the run from now on (``corral attach`` of a run whose
        follower was lost): it becomes the record's owner, the ``FOLLOWING_LOST`` word goes."""
        if self.info.detail.startswith(FOLLOWING_LOST):
            self._adopted = True
            with contextlib.suppress(OSError, CorralError):
                self.change(owner=this_owner(), detail="")

    def detached(self) -> None:
        """This process stops following a running run on purpose (a detach, ``--detach``): it
        owns it no longer, so its end reads as a detach, not as ``FOLLOWING_LOST``."""
        if self.info.owner == this_owner() and self.info.state == "running":
            with contextlib.suppress(OSError, CorralError):
                self.change(owner="")

    def forget(self) -> None:
        """A launch refused before it touched a host: no record of its own (``status`` and
        ``report`` do not list it); a resumed run's record was held, so it is as it was."""
        if not self._held:
            shutil.rmtree(local_run_dir(self._config, self.info.run_id), ignore_errors=True)
        self._forgotten = True

    def ask_stop(self) -> None:
        """Tell the corral launching this run (if one is) to end its launch (``STOP_ASKED``)."""
        with contextlib.suppress(OSError, CorralError):
            (local_run_dir(self._config, self.info.run_id) / STOP_ASKED).touch()

    def clear_stop(self) -> None:
        """A new launch of this run (``--resume``): an earlier stop's ``STOP_ASKED`` is done."""
        with contextlib.suppress(OSError, CorralError):
            (local_run_dir(self._config, self.info.run_id) / STOP_ASKED).unlink(missing_ok=True)

    def stop_was_asked(self) -> bool:
        """Whether a ``corral stop`` asked this run to stop (``ask_stop``)."""
        if self._held or self._forgotten:
            return False
        try:
            return (local_run_dir(self._config, self.info.run_id) / STOP_ASKED).exists()
        except CorralError:
            return False

    def suspects(self, hosts: set[str]) -> None:
        """``hosts`` where processes of the run may be left (see ``RunInfo.suspect_hosts``),
        added to those recorded already (a host cut off earlier stays until found clean)."""
        recorded = set(self.recorded().suspect_hosts)
        self.change(suspect_hosts=tuple(sorted(recorded | hosts)))

    def cleanup(self, report: StopReport) -> None:
        """What a stop found (``cleanup``), leaving the run's outcome (``state``) alone."""
        try:
            info = read_run_info(self._config, self.info.run_id)
        except CorralError:
            return
        self.change(cleanup=describe_stop(report, when=time.time()),
                    suspect_hosts=tuple(sorted(suspects_after(set(info.suspect_hosts),
                                                              report))))

    async def owner_decided(self, followed: RunInfo) -> RunInfo:
        """The record once the corral that launched the run (its owner, another process)
        said what it made of an attempt this process followed (``followed``: the record
        then): the run ended, another attempt was launched (``owner_relaunched``), or nobody
        launches it (no owner, its owner gone: ``unfollowed``, or this process adopted it).
        Read every ``OWNER_POLL_S`` (that corral writes it); a record gone is ``followed``."""
        while True:
            try:
                now = read_run_info(self._config, self.info.run_id)
            except CorralError:
                return followed
            if (now.state in FINAL_RUN_STATES or unfollowed(now) or not now.owner
                    or self._adopted or owner_relaunched(now, followed)):
                return now
            await asyncio.sleep(OWNER_POLL_S)

    def recorded(self) -> RunInfo:
        """The record as it is on disk now (``info`` when there is none, or while held)."""
        if self._held or self._forgotten:
            return self.info
        try:
            return read_run_info(self._config, self.info.run_id)
        except CorralError:
            return self.info


def recorded_refresh(config: ClusterConfig, before: RunInfo, after: RunInfo) -> None:
    """What ``corral status`` found on the hosts of a run no process follows (its state from
    the launchers' exit files, its cleanup): recorded when it changed anything."""
    if after != before:
        write_run_info(config, after)
