"""``SshRunController``: the remote layer's implementation of ``remote.api.RunController``.

``start`` returns a handle (``remote/run/handle.py``) at once; iterating its ``events()`` drives
the run through its lifecycle (``remote/run/lifecycle.py``): pre-flight check, push, launch on
every host, the merged event tail, perhaps the stop after a failure and a restart, until the run
ends. ``attach`` follows a run started earlier (by this or another process) from the local
copy's offsets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig
from remote.config.rules import run_name_problem
from remote.events import FINAL_RUN_STATES, CheckReport
from remote.hosts.pool import HostPool
from remote.records.owner import this_owner
from remote.records.runs import (
    RunInfo,
    new_run_id,
    newer_unfinished_runs,
    read_run_info,
    resolve_run_id,
)
from remote.run.handle import SshRunHandle
from remote.run.notify import NotifyingHandle
from remote.run.record import RunRecord
from remote.run.record_changes import ClearStopMark, RecordAdopted
from remote.run.resume import refuse_live, run_to_resume
from remote.run.script_record import script_words, with_args, with_recorded_script
from trainer.settings.run_settings import POLICIES


class SshRunController:
    """Runs of one cluster.toml over SSH (and ``local`` hosts)."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.pool = HostPool(config)

    async def check(self) -> CheckReport:
        """Pre-flight check of every host in parallel, with the launch plan when it passes."""
        from remote.run.preview import check_with_preview

        return await check_with_preview(self.config, self.pool)

    async def start(self, *, resume: bool | str = False, policy: str | None = None,
                    name: str | None = None,
                    script_args: Sequence[str] | None = None) -> SshRunHandle:
        """A handle on a new run named ``name``, else ``[run] name``. With ``resume``, an
        earlier run relaunched from its newest checkpoint: the run it names (a run id, name or
        unique start of an id), or with ``True`` the newest run that has a checkpoint (a
        resumed run keeps its own name unless one is given). ``script_args``: a script run's
        arguments in place of its own (the console's ``r``, edited); a resumed run named
        without a script in cluster.toml runs the script its record holds."""
        if policy is not None and policy not in POLICIES:
            raise CorralError(f"unknown policy {policy!r}: use {', '.join(POLICIES[:-1])} or "
                              f"{POLICIES[-1]}")
        if name is not None and (problem := run_name_problem(name)):
            raise UsageError(f"--name {name!r}: {problem}", title="bad run name")
        hosts = tuple(h.name for h in self.config.hosts)
        named = resume if isinstance(resume, str) else None
        config = self.config if named is None else with_recorded_script(self.config, named)
        if script_args is not None:
            config = with_args(config, script_args)
        if resume is False:  # "" (an empty $RUN) is a run to name, never a fresh start
            info = RunInfo(run_id=new_run_id(self.config.cluster.name),
                           cluster=self.config.cluster.name, state="checking",
                           started=time.time(), hosts=hosts, owner=this_owner(),
                           config_path=str(config.path.resolve()),
                           name=name or config.run.name or "",
                           script=script_words(config))
            return NotifyingHandle(config, self.pool, info, launch=True, policy=policy,
                                record=RunRecord.new(config, info))
        previous = await run_to_resume(config, self.pool, named)
        await refuse_live(config, self.pool, previous)
        if named is None:
            for newer in newer_unfinished_runs(config, previous):
                await refuse_live(config, self.pool, newer, instead_of=previous)
        # Relaunched on every host: none of them has left this attempt (yet). The record keeps
        # the arguments this attempt runs with: the next --resume reruns them.
        info = replace(previous, state="checking", hosts=hosts, left_hosts=(),
                       owner=this_owner(), config_path=str(config.path.resolve()),
                       name=name or previous.name,
                       script=script_words(config) or previous.script)
        # Held: the earlier run's record changes only once this launch starts a host.
        record = RunRecord(config, info, held=True)
        record.apply(ClearStopMark())
        return NotifyingHandle(config, self.pool, info, launch=True, resume=True,
                            policy=policy, record=record)

    async def attach(self, run_id: str) -> SshRunHandle:
        """Follow recorded run ``run_id`` (or the one run whose id starts with it) from the last
        event this machine's copy holds. Following changes nothing on the hosts."""
        info = read_run_info(self.config, resolve_run_id(self.config, run_id))
        record = RunRecord(self.config, info, outcome_kept=info.state in FINAL_RUN_STATES)
        record.apply(RecordAdopted())  # its follower was lost: this one records how it ends
        return NotifyingHandle(self.config, self.pool, record.info, launch=False, record=record)

    async def aclose(self) -> None:
        """Close every SSH connection (runs keep going on the hosts)."""
        await self.pool.aclose()


def open_controller(path: str | os.PathLike[str]) -> SshRunController:
    """Load ``path`` (a cluster.toml) and return its controller."""
    from remote.config.read import load_cluster

    return SshRunController(load_cluster(path))

