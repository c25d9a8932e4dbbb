"""The data phase of a script run's push: the launch folder's data to every host at once.

``sync_run_data`` collects the run's data (``remote.hosts.data_tree``: what the folder holds
that is data, and ``[run] data``), asks every host what it has (``remote.hosts.data_sync``),
refuses before a byte is sent what a host cannot take (a path it lacks, too little disk),
hashes here the new files as large as one a host caches (``hash_alike``: maybe that file,
touched), then feeds every host in parallel (one that lacks much through OpenSSH's ``ssh``
where it can carry corral's settings, else the first such host from this process and the
others from sender processes: ``data_sender.fed_by_senders``), a progress line per host
every ``PROGRESS_EVERY_S``, and one line per host at the end (sent / cached / in place).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from profiles.user_errors import CorralError
from remote.checks.data_room import data_room, run_data
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode
from remote.events import LogLine, RunEvent
from remote.hosts.data_openssh import openssh_hosts
from remote.hosts.data_sender import fed_by_senders
from remote.hosts.data_sync import (
    DataProgress,
    HostData,
    sync_host,
    to_send,
)
from remote.hosts.data_tree import DataSet, hash_alike
from remote.hosts.pool import HostPool
from remote.run.lifecycle import LaunchFailed
from trainer.run_layout import RunLayout

PROGRESS_EVERY_S = 1.0
"""How often a host still receiving data gets a progress line."""


def _line(text: str) -> LogLine:
    return LogLine(t=time.time(), host="*", rank=None, text=text)


async def _probe_all(pool: HostPool, data: DataSet, layout: RunLayout) -> dict[str, HostData]:
    """Every host's answer; ``LaunchFailed`` naming each host that cannot take the data (the
    check's own decision, ``remote.checks.data_room``)."""
    found, problems = await data_room(pool, data, lambda name: layout.host_file(name, "data"))
    if problems:
        raise LaunchFailed("data cannot travel: " + "; ".join(problems.values()))
    return found


async def sync_run_data(pool: HostPool, config: ClusterConfig, run_dir: str,
                        user: UserCode | None) -> AsyncGenerator[RunEvent, None]:
    """Sync the run's data to every host (see the module's docstring); ``user`` is the
    launch's user code."""
    try:
        data = await asyncio.to_thread(run_data, config, user)
    except CorralError as exc:
        raise LaunchFailed(exc.message) from None
    if data is None:
        return
    layout = RunLayout(run_dir)
    found = await _probe_all(pool, data, layout)
    try:  # a new file the size of one a host caches: hashed here, maybe nothing to send
        data = await asyncio.to_thread(
            hash_alike, data, {size for one in found.values() for _, size in one.alike})
    except CorralError as exc:
        raise LaunchFailed(exc.message) from None
    senders = fed_by_senders({name: sum(f.size for f in to_send(data, one))
                              for name, one in found.items()},
                             openssh_hosts(config.hosts, config.ssh))
    progress = {name: DataProgress(host=name) for name in found}
    syncing = asyncio.ensure_future(pool.gather(
        lambda t: sync_host(t, data, found[t.host.name],
                            layout.host_file(t.host.name, "data"), progress[t.host.name],
                            config.ssh if t.host.name in senders else None),
        list(found)))
    try:
        while not syncing.done():
            await asyncio.wait([syncing], timeout=PROGRESS_EVERY_S)
            for one in progress.values():
                if not syncing.done() and not one.done and one.total_bytes:
                    yield _line(one.line())
    finally:
        if not syncing.done():  # interrupted: the hosts' receivers see their input end
            syncing.cancel()
    errors = [f"{name}: {result}" for name, result in syncing.result().items()
              if isinstance(result, BaseException)]
    if errors:
        raise LaunchFailed("data sync failed: " + "; ".join(errors))
    for one in progress.values():
        yield _line(one.summary())
