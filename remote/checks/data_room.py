"""Whether each host can take a script run's data: the one decision ``corral check`` and
``corral run`` share (issue 81: a check said ``data-sync ok`` for 3 GB headed to a host with
1.2 GiB free, which the run then refused).

Each host's data probe (``remote.hosts.data_sync.probe``) tells what its cache holds, whether
it sees this machine's files, the paths it lacks and its free disk; ``plan_problem`` says why
it cannot take the data. ``corral run`` refuses the launch on any problem before a byte is
sent; ``corral check`` shows the same sentence as the host's ``data-sync`` item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.checks.script_imports import DATA_CHECK
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode
from remote.events import CheckItem
from remote.hosts.data_marker import Marker
from remote.hosts.data_sync import HostData, plan_problem, probe, to_send
from remote.hosts.data_tree import DataSet, absolute_args, arg_problem, collect
from remote.hosts.pool import HostPool
from remote.hosts.push_tree import mib


def run_data(config: ClusterConfig, user: UserCode | None) -> DataSet | None:
    """The script run's ``DataSet``; None for a task run or one with no data. ``user`` is the
    run's user code (``user_code``); the script's absolute-path arguments are paths every host
    must have (``absolute_args``). A ``CorralError`` names a ``[run] data`` path at fault."""
    if config.run.script is None or config.run.data is False or user is None:
        return None
    data = collect(user.folder, config.run.data, config.path.parent)
    args = absolute_args(config.run.args)
    data = replace(data, host_paths=tuple(dict.fromkeys(data.host_paths + args)),
                   arg_paths=args)
    return data if data.files or data.links or data.host_paths else None


async def data_room(pool: HostPool, data: DataSet, manifest: Callable[[str], str | None]
                    ) -> tuple[dict[str, HostData], dict[str, str]]:
    """Every host's probe answer, and per host the sentence saying why it cannot take
    ``data`` (an unreachable probe's error too). ``manifest(host)``: the path of the link list
    its probe writes when nothing needs sending (None: write none, as a check does)."""
    with Marker(data.folder) as marker:
        answers = await pool.gather(lambda t: probe(t, data, marker.pair(),
                                                    manifest(t.host.name)))
    found: dict[str, HostData] = {}
    problems: dict[str, str] = {}
    for name, answer in answers.items():
        if isinstance(answer, BaseException):
            problems[name] = f"{name}: {answer}"
        elif (problem := arg_problem(name, data, answer.missing)
              or plan_problem(name, data, answer)) is not None:
            problems[name] = problem
        else:
            found[name] = answer
    return found, problems


async def data_room_items(config: ClusterConfig, pool: HostPool, user: UserCode | None
                          ) -> list[CheckItem]:
    """``corral check``'s ``data-sync`` item per host for a script run with data: what
    ``corral run`` would refuse (too little disk, a path the host lacks), or what would be
    sent there."""
    try:
        data = await asyncio.to_thread(run_data, config, user)
    except CorralError as exc:
        return [CheckItem(host="*", name=DATA_CHECK, ok=False, detail=exc.message,
                          hint="docs/data.md: your data")]
    if data is None:
        return []
    found, problems = await data_room(pool, data, lambda _: None)
    items = [CheckItem(host=name, name=DATA_CHECK, ok=False, detail=problem,
                       hint="corral run refuses this host's data as it is (docs/data.md)")
             for name, problem in problems.items()]
    for name, answer in found.items():
        need = sum(f.size for f in to_send(data, answer))
        detail = ("sees this machine's files: nothing sent" if answer.shared else
                  f"up to {mib(need)} to send, {mib(answer.free)} free")
        items.append(CheckItem(host=name, name=DATA_CHECK, ok=True, detail=detail))
    return items
