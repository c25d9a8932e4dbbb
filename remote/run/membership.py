"""``corral leave HOST``: ask a host of a running run to leave it live.

A planned leave is a file on the leaving host (``RunLayout.leave_request``, in its run
directory) that its ranks read at the next step boundary (``trainer.membership.contract``):
they hand their share to the others and end cleanly, and rank 0 reports the change as a
``membership`` event, which the run's follower hears (``remote/run/decide.py``) and records
(``run.json``'s ``hosts`` and ``left_hosts``). This module only checks that the leave can be
asked and writes the file; it stops nothing.

What cannot leave is refused with what to do instead, before any host is touched: a host not
in the run, the master's host (rank 0 serves the rendezvous and the membership store there),
a run that has ended, and a run without live membership (a script run as is, whose lost host
restarts the run from the script's own checkpoint, or the low-communication mode with
``outer_overlap``). A low-communication run without it takes the leave at the end of the round
under way (``trainer.membership.contract.change_moment``).
"""

from __future__ import annotations

import posixpath

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES
from remote.hosts.command_errors import RemoteCommandError
from remote.hosts.pool import HostPool
from remote.hosts.transport import shell_path
from remote.records.runs import RunInfo, run_dir_for, unfollowed
from remote.run.record import RecordMembers, RunRecord
from trainer.run_layout import RunLayout


class MembershipRefused(CorralError):
    """A join or leave that cannot be asked of this run (the message says what to do)."""

    title = "cannot change the run's hosts"


def shared_refusal(config: ClusterConfig, info: RunInfo, host: str,
                   ended: str) -> str | None:
    """What a join and a leave both refuse first: a host not in cluster.toml, a run that
    has ended (``ended``: what to do instead)."""
    names = [h.name for h in config.hosts]
    if host not in names:
        return f"no host {host!r} in {config.path} (its hosts: {', '.join(names)})"
    if info.state in FINAL_RUN_STATES:
        return f"run {info.label} has ended ({info.state}): {ended}"
    return None


def no_live_membership(run: str, what: str) -> str:
    """The refusal of a run without live membership; ``what``: how to get the change."""
    return (f"run {run} has no live membership (launched with `[run] live_membership = "
            f"false`, `outer_overlap = true`, or before corral had it on by default): `corral "
            f"stop` it and `corral run --resume` {what}")


def leave_refusal(config: ClusterConfig, info: RunInfo, host: str) -> str | None:
    """Why ``host`` cannot leave the run ``info`` (None: it can)."""
    run = info.label
    if (why := shared_refusal(config, info, host, "there is nothing to leave")) is not None:
        return why
    if host == config.cluster.master:
        return (f"{host} is the master's host: rank 0 serves the run's rendezvous and "
                "membership store there, so it cannot leave; `corral stop` ends the run")
    if host not in info.hosts:
        return (f"{host} is not in run {run} (its hosts now: {', '.join(info.hosts)})"
                + ("; it left already" if host in info.left_hosts else ""))
    if not info.membership_port:
        return restart_path(config, run, host)
    return None


def restart_path(config: ClusterConfig, run: str, host: str) -> str:
    """What taking ``host`` out of a run without live membership means, and how to ask it."""
    what = ("a script run as is: the script owns its loop; the DDP helper's scripts join and "
            "leave live" if config.run.script is not None
            else "launched with `[run] live_membership = false` or without it")
    return (f"run {run} has no live membership ({what}), so {host} cannot leave it live. "
            f"Taking it out is a restart: the run is stopped on every host and launched again "
            f"on the others from its newest checkpoint (a script's own; the steps since it "
            f"run again). `corral leave {host} --restart` does that")


def restart_refusal(config: ClusterConfig, info: RunInfo, host: str) -> str | None:
    """Why ``corral leave HOST --restart`` cannot take ``host`` out of ``info`` (None: it
    can): what refuses any leave, and a run with live membership (a leave needs no restart)."""
    if info.membership_port:
        return (f"run {info.label} has live membership: `corral leave {host}` takes {host} "
                "out at its next step boundary, without a restart")
    why = leave_refusal(config, info, host)
    return None if why == restart_path(config, info.label, host) else why


def leave_command(run_dir: str, host: str) -> str:
    """Shell that writes ``host``'s leave request in ``run_dir`` (as the host's shell sees
    it): to a temp file, then renamed, so the ranks never read half a file."""
    path = RunLayout(run_dir).leave_request(host)
    folder, temp = posixpath.dirname(path), f"{path}.tmp"
    return (f"mkdir -p {shell_path(folder)} && printf 'asked\\n' > {shell_path(temp)} && "
            f"mv -f {shell_path(temp)} {shell_path(path)}")


async def request_leave(config: ClusterConfig, pool: HostPool, info: RunInfo,
                        host: str) -> str:
    """Write ``host``'s leave request for the run ``info`` on ``host``; the path written (as
    the host sees it). ``MembershipRefused`` when the leave cannot be asked (nothing written)."""
    if (why := leave_refusal(config, info, host)) is not None:
        raise MembershipRefused(why)
    run_dir = run_dir_for(config, info.run_id)
    transport = await pool.get(host)
    try:
        await transport.run(leave_command(run_dir, host), check=True, timeout=30.0)
    except RemoteCommandError as exc:
        raise MembershipRefused(f"could not write the leave request on {host}: {exc}") from None
    if unfollowed(info):  # no follower hears the ranks' event: this command records the change
        record_unfollowed(config, info, hosts=tuple(h for h in info.hosts if h != host),
                          left={*info.left_hosts, host})
    return RunLayout(run_dir).leave_request(host)


def record_unfollowed(config: ClusterConfig, info: RunInfo, *, hosts: tuple[str, ...],
                      left: set[str]) -> None:
    """``corral leave`` / ``join`` of a run nobody follows (``--detach``): the hosts in it now
    and those that left, written through the record's one writer as a follower would write
    them at the ranks' event (``RecordMembers``), so the next command sees the change (a leaver
    stays in ``left_hosts``: a stop still reaches its processes while they wind down)."""
    RunRecord(config, info).apply(RecordMembers(hosts=hosts, left=tuple(sorted(left))))
