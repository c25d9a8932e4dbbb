"""What a change of the run's membership means to the run loop, with no I/O (a part of
``remote/run/decide.py``: ``decide`` calls ``members_changed`` for a ``MembershipSeen``).

Rank 0 reports each change as a ``membership`` event once the new generation completed a
step; the ranks themselves did the change (``trainer/membership``), so nothing here stops or
starts a process. The loop says it (a host ``left at step N (why)``, ``running`` for a joiner,
a line for a refused join), records the hosts in the run now and those that left
(``RecordMembers``), and tells the follower (``MembersChanged``): a host that left ending its
launcher, or its tail going quiet, is no failure of the run.

The hot path: with ``on_host_loss = "continue"`` and a membership port (a ``task`` run), a
lost host is taken out by the survivors in their own processes (``hot_path_refusal`` is None);
the follower then waits up to ``HOT_PATH_WAIT_S`` for their ``membership`` event before it
reports the failure, and only then does the loop fall back to today's restart from the newest
checkpoint (the line it logs names why).
"""

from __future__ import annotations

from dataclasses import replace

from remote.config.cluster import ClusterConfig
from remote.config.live_membership import membership_refusal
from remote.events import HostStatus, LogLine, RunEvent
from remote.records.disk_full import LOCAL
from remote.records.runs import RunInfo
from remote.run.actions import Action, ForgetJoin, MembersChanged, StopJoiner, TailJoiner
from remote.run.lifecycle import JoinEnded, JoinLaunched, MembershipSeen
from remote.run.loop_state import LoopState, RunDecision
from remote.run.record_changes import RecordMembers
from trainer.events import MembershipEvent
from trainer.membership.contract import change_moment
from trainer.membership.reach import CUT_OFF_S


def members_signal(state: LoopState, signal: MembershipSeen | JoinLaunched | JoinEnded,
                   t: float) -> RunDecision:
    """``decide``'s case for a change of membership: rank 0's event, a join launched by
    ``corral join``, a joiner's launcher that ended before it was let in."""
    if isinstance(signal, JoinLaunched):
        return join_launched(state, signal, t)
    if isinstance(signal, JoinEnded):
        if signal.host not in state.joining:  # let in, or its failure said already
            return RunDecision([], state, [])
        failed = join_failed(state, signal.host, signal.detail, t)
        stop: list[Action] = [StopJoiner(signal.host)] if signal.running else []
        return replace(failed, actions=[*stop, *failed.actions])
    event = signal.event
    if event.change == "refused" and (hosts := [h for h in event.hosts if h in state.joining]):
        failed = join_failed(state, hosts[0],
                             f"refused by rank 0: {event.reason or 'no reason given'}", t)
        return replace(failed, events=members_changed(state, signal, t).events + failed.events)
    seen = members_changed(state, signal, t)
    joining = state.joining
    settled = frozenset(event.hosts) & joining if event.change == "joined" else frozenset()
    return RunDecision(seen.events, replace(seen.state, joining=joining - settled),
                       [*seen.actions, *(ForgetJoin(h) for h in sorted(settled))])


def join_launched(state: LoopState, launched: JoinLaunched, t: float) -> RunDecision:
    """``corral join`` started ``launched.host``: it counts in the run (``run.json`` lists it,
    a stop reaches it, it is no longer a host that left), ``joining`` until rank 0 lets it in
    at a step boundary (a round's end in a lowcomm run), and it is followed like any host."""
    host, config = launched.host, state.config
    known = {h.name for h in config.hosts}
    sections = (*state.cluster_hosts, *((launched.section,) if launched.section else ()))
    added = tuple(h for h in sections if h.name == host and h.name not in known)[:1]
    if host in known and host not in state.joining:  # in the run already: an old record
        return RunDecision([], state, [ForgetJoin(host)])
    if not added and host not in known:  # cluster.toml has no such host (any more)
        line = LogLine(t=t, host="*", rank=None, text=(
            f"a join record names {host}, which cluster.toml does not: not followed"))
        return RunDecision([line], state, [ForgetJoin(host)])
    config = replace(config, hosts=(*config.hosts, *added))
    left = state.left - {host}
    join_at = change_moment(config.run.exchange).join_at  # a round's end in a lowcomm run
    said: list[RunEvent] = [
        HostStatus(t=t, host=host, state="joining", detail=f"launched; let in at {join_at}"),
        LogLine(t=t, host="*", rank=None, text=(
            f"{host} is joining: its launcher started (pgid {launched.pgid}) "
            f"{max(0.0, t - launched.asked):.1f} s after `corral join`; rank 0 lets it in "
            f"at {join_at}"))]
    record = RecordMembers(hosts=tuple(h.name for h in config.hosts), left=tuple(sorted(left)))
    return RunDecision(said, replace(state, config=config, left=left,
                                     joining=state.joining | {host}),
                       [record, TailJoiner(host)])


def join_failed(state: LoopState, host: str, why: str, t: float) -> RunDecision:
    """The join of ``host`` failed (``why``): it is taken out of the run's hosts again and
    the run goes on as it was."""
    config = replace(state.config, hosts=tuple(h for h in state.config.hosts if h.name != host))
    said: list[RunEvent] = [
        HostStatus(t=t, host=host, state="failed", detail=f"join failed: {why}"),
        LogLine(t=t, host="*", rank=None,
                text=f"join of {host} failed: {why}; the run goes on unchanged")]
    record = RecordMembers(hosts=tuple(h.name for h in config.hosts),
                           left=tuple(sorted(state.left)))
    return RunDecision(said, replace(state, config=config, joining=state.joining - {host}),
                       [record, ForgetJoin(host)])


def hot_path_refusal(config: ClusterConfig, info: RunInfo, host: str) -> str | None:
    """Why the survivors cannot take ``host`` out in their own processes (None: they can,
    and the follower waits for them): the restart path is then taken, as before."""
    if config.run.on_host_loss != "continue":
        return f'[run] on_host_loss = "{config.run.on_host_loss}"'
    if config.run.script is not None:  # the DDP helper: its collectives fail in the script
        return ("a script's collectives fail inside its own code, where no step can be redone: "
                "it restarts from its own checkpoint (planned leaves and joins are live)")
    if config.run.shard_state != "replicate":
        return (f'shard_state = "{config.run.shard_state}": a lost host\'s slice of the '
                "optimizer state is lost with it, so the run restarts from its newest "
                "checkpoint, re-sliced (planned leaves and joins are live)")
    if not info.membership_port:
        return ("the run has no live membership: "
                + (membership_refusal(config) or "it was launched before corral had it"))
    if host == config.cluster.master:
        return f"{host} is the master's host (rank 0 holds the rendezvous and the store)"
    if host == LOCAL:  # its records could not be written: no host the others can leave
        return "the failure is this machine's own, not a host's"
    return None


def host_loss_line(config: ClusterConfig, membership_port: int | None) -> str:
    """Which path a lost host will take in a run launched with ``membership_port``, as the
    run's start line says it (``hot_path_refusal`` decides it for each loss)."""
    run, master = config.run, config.master_name
    if run.on_host_loss != "continue":
        live = "; hosts leave and join live (`corral leave`, `corral join`)"
        return (f'a lost host fails the run (on_host_loss = "{run.on_host_loss}")'
                + (live if membership_port else ""))
    if membership_port and run.script is not None:
        return (f"a lost host other than {master} is dropped and the script restarts on the "
                "others from its own checkpoint; hosts leave and join live (`corral leave`, "
                "`corral join`: the DDP helper, the HF/TRL opt-in)")
    if membership_port and run.shard_state != "replicate":
        return (f"a lost host other than {master} is dropped and the run restarts on the "
                "others from its newest checkpoint, re-sliced (its slice of the sharded state "
                "is lost with it); hosts leave and join live (`corral leave`, `corral join`)")
    if membership_port:
        return (f"a lost host other than {master} is left behind by the others in their own "
                "processes (live membership; `live_membership = false`: a restart instead)")
    return (f"a lost host other than {master} is dropped and the run restarts on the others "
            f"from its newest checkpoint ({membership_refusal(config) or 'no membership port'})")


def left_detail(event: MembershipEvent) -> str:
    """How the hosts table shows a host that left: ``left at step N (why)``."""
    return event.host_detail()


def members_changed(state: LoopState, seen: MembershipSeen, t: float) -> RunDecision:
    """The run's hosts after ``seen`` (``state.config``: the hosts in the run before it,
    ``state.left``: those that left before, ``state.cluster_hosts``: every host of
    cluster.toml)."""
    config, left, event = state.config, state.left, seen.event
    hosts = frozenset(event.hosts)
    if event.change == "refused":
        why = event.reason or "no reason given"
        line = LogLine(t=t, host="*", rank=None,
                       text=f"join of {', '.join(event.hosts)} refused: {why}; the run "
                       "goes on unchanged")
        return RunDecision([line], state, [])
    if event.change == "left":
        kept = tuple(h for h in config.hosts if h.name not in hosts)
        left = left | hosts
        said: list[RunEvent] = [HostStatus(t=t, host=h, state="left", detail=left_detail(event))
                                for h in event.hosts]
        changed = MembersChanged(left=hosts)
    else:
        known = {h.name for h in config.hosts}
        added = [h for h in state.cluster_hosts if h.name in hosts and h.name not in known]
        kept, left = (*config.hosts, *added), left - hosts
        said = [HostStatus(t=t, host=h, state="running", detail=event.host_detail())
                for h in event.hosts]
        changed = MembersChanged(left=frozenset(), joined=hosts)
    took = (f" in {event.seconds_to_step:.1f} s" if event.seconds_to_step is not None else "")
    redone = f", {event.redone_steps} step(s) redone" if event.redone_steps else ""
    redone += f" ({event.phases_text()})" if event.phases else ""
    said.append(LogLine(t=t, host="*", rank=None, text=(
        f"generation {event.generation}: {', '.join(event.hosts)} {event.change} at step "
        f"{event.step}{took}{redone}; {event.world_size} rank(s) train on")))
    if event.change == "left" and event.said:  # its ranks' own words: nothing else brings them
        named = ", ".join(event.hosts)
        said.append(LogLine(t=t, host="*", rank=None, text=(
            f"corral: {named} left because its ranks ended on: {event.said}; the run goes on "
            f"without it (`corral join {named}` once that is fixed)")))
    config = replace(config, hosts=kept, run=replace(config.run, split=None))
    cut = tuple(sorted(hosts)) if event.change == "left" and event.cause == "unreachable" else ()
    cleanup = cut_off_line(cut, event.step) if cut else ""
    if cut:
        said.append(LogLine(t=t, host="*", rank=None, text=f"corral: {cleanup}"))
    record = RecordMembers(hosts=tuple(h.name for h in kept), left=tuple(sorted(left)),
                           cut_off=cut, cleanup=cleanup)
    return RunDecision(said, replace(state, config=config, left=left), [record, changed])


def cut_off_line(hosts: tuple[str, ...], step: int) -> str:
    """What the run says, and records as its ``cleanup``, of ``hosts`` cut off at ``step``."""
    named = ", ".join(hosts)
    return (f"{named} cut off at step {step}: its ranks end by themselves within "
            f"{CUT_OFF_S:g} s of the cut; corral will finish what is left there when {named} "
            "is back (corral status, check or run)")
