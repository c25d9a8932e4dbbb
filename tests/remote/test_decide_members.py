"""What a change of membership does to the run, as rows of ``decide``: a host that left, a
join launched, let in, refused or failed, and where the hot path is open (``decide_members``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from remote.events import HostStatus, LogLine
from remote.run import lifecycle as sig
from remote.run.actions import ForgetJoin, MembersChanged, StopJoiner, TailJoiner
from remote.run.decide import LoopState
from remote.run.decide_members import hot_path_refusal
from remote.run.lifecycle import Heard, Phase
from remote.run.record_changes import RecordMembers
from trainer.events import MembershipEvent

try:
    from test_decide import T, _fold, _info, _state, _stops
except ImportError:  # collected as a package
    from tests.remote.test_decide import (  # type: ignore[no-redef]
        T,
        _fold,
        _info,
        _state,
        _stops,
    )


def _membership(change: str, hosts: tuple[str, ...], *, step: int = 7,
                cause: str | None = None, generation: int = 1,
                world_size: int = 2) -> sig.MembershipSeen:
    return sig.MembershipSeen(MembershipEvent(
        t=T, rank=0, generation=generation, step=step, change=change,  # type: ignore[arg-type]
        hosts=hosts, cause=cause, world_size=world_size, seconds_to_step=1.5,
        reason="wrong torch" if change == "refused" else None))


def _names(state: LoopState) -> tuple[str, ...]:
    return tuple(h.name for h in state.config.hosts)


@pytest.mark.parametrize(("before_left", "seen", "hosts", "left", "status", "detail"), [
    ((), _membership("left", ("h2",), cause="asked"), ("h0", "h1"), ("h2",), "left",
     "left at step 7 (asked)"),
    ((), _membership("left", ("h1",), cause="ranks_died"), ("h0", "h2"), ("h1",), "left",
     "left at step 7 (ranks_died)"),
    (("h2",), _membership("joined", ("h2",), step=12, generation=2, world_size=3),
     ("h0", "h1", "h2"), (), "running", "joined at step 12"),
])
def test_a_membership_change_is_said_recorded_and_told_to_the_follower_without_a_restart(
        before_left: tuple[str, ...], seen: sig.MembershipSeen, hosts: tuple[str, ...],
        left: tuple[str, ...], status: str, detail: str) -> None:
    state = _state(on_host_loss="continue")
    state = replace(state, cluster_hosts=state.config.hosts, left=frozenset(before_left),
                    config=replace(state.config, hosts=tuple(
                        h for h in state.config.hosts if h.name not in before_left)))
    events, after, actions = _fold(state, seen)
    assert after.phase is Phase.RUNNING and _names(after) == hosts  # no stop, no restart
    assert after.left == frozenset(left)
    changed = frozenset(seen.event.hosts)
    assert actions == [RecordMembers(hosts=hosts, left=left),
                       MembersChanged(left=changed if status == "left" else frozenset(),
                                          joined=frozenset() if status == "left" else changed)]
    assert events[0] == HostStatus(t=T, host=seen.event.hosts[0], state=status,  # type: ignore[arg-type]
                                   detail=detail)
    assert isinstance(events[1], LogLine) and f"generation {seen.event.generation}" in \
        events[1].text and "1.5 s" in events[1].text


def test_a_refused_join_leaves_the_run_untouched_and_names_why() -> None:
    state = _state(on_host_loss="continue")
    events, after, actions = _fold(state, _membership("refused", ("h2",)))
    assert after == state and actions == []
    assert [e.text for e in events if isinstance(e, LogLine)] == [
        "join of h2 refused: wrong torch; the run goes on unchanged"]


@pytest.mark.parametrize(("on_host_loss", "port", "host", "why"), [
    ("continue", 31000, "h1", None),
    ("continue", 31000, "h0", "h0 is the master's host"),
    ("continue", 0, "h1", "no live membership"),
    ("stop", 31000, "h1", 'on_host_loss = "stop"'),
    # this machine's records unwritable (a full disk): no host the others could go on without
    ("continue", 31000, "this machine", "this machine's own"),
])
def test_the_hot_path_is_taken_where_it_can_be_and_the_fallback_names_why(
        on_host_loss: str, port: int, host: str, why: str | None) -> None:
    state = _state(on_host_loss=on_host_loss)
    info = replace(_info("running"), membership_port=port)
    refusal = hot_path_refusal(state.config, info, host)
    assert refusal is None if why is None else why in (refusal or "")


def _two_and_a_joiner() -> LoopState:
    """h0 and h1 train; h2 (of cluster.toml) is not in the run: it left at step 3."""
    state = _state(on_host_loss="continue")
    return replace(state, cluster_hosts=state.config.hosts, left=frozenset({"h2"}),
                   config=replace(state.config, hosts=state.config.hosts[:2]))


LAUNCHED = sig.JoinLaunched(host="h2", pgid=4242, asked=T - 20.0)


@pytest.mark.parametrize(("after_launch", "hosts", "status", "said", "forgotten"), [
    ((), ("h0", "h1", "h2"), "joining", "launcher started (pgid 4242) 20.0 s after", ()),
    ((_membership("joined", ("h2",), generation=2, world_size=3),),
     ("h0", "h1", "h2"), "running", "h2 joined at step 7", ("h2",)),
    ((sig.JoinEnded(host="h2", detail="its launcher ended with status 1"),), ("h0", "h1"),
     "failed", "join of h2 failed: its launcher ended with status 1", ("h2",)),
    ((_membership("refused", ("h2",)),),
     ("h0", "h1"), "failed", "join of h2 failed: refused by rank 0: wrong torch", ("h2",)),
    # the launcher's end after rank 0 let it in is no failed join: nothing said or done
    ((_membership("joined", ("h2",)), sig.JoinEnded(host="h2", detail="status 0")),
     ("h0", "h1", "h2"), "running", "h2 joined at step 7", ("h2",)),
])
def test_a_join_is_counted_followed_then_let_in_or_taken_out_again(
        after_launch: tuple[Heard, ...], hosts: tuple[str, ...], status: str, said: str,
        forgotten: tuple[str, ...]) -> None:
    events, after, actions = _fold(_two_and_a_joiner(), LAUNCHED, *after_launch)
    assert after.phase is Phase.RUNNING and _names(after) == hosts  # no stop, no restart
    assert (after.left, after.joining) == (frozenset(), {"h2"} if status == "joining" else set())
    # counted in the run at once (a stop reaches it, it is no host that left), then settled
    records = [a for a in actions if isinstance(a, RecordMembers)]
    assert records[0] == RecordMembers(hosts=("h0", "h1", "h2"), left=())
    assert records[-1] == RecordMembers(hosts=hosts, left=())
    assert TailJoiner("h2") in actions and not _stops(actions)
    assert [a.host for a in actions if isinstance(a, ForgetJoin)] == list(forgotten)
    states = [e.state for e in events if isinstance(e, HostStatus)]
    assert (states[0], states[-1]) == ("joining", status)
    assert any(said in e.text for e in events if isinstance(e, LogLine))


def test_a_join_record_of_a_host_in_the_run_is_only_forgotten() -> None:
    state = _state(on_host_loss="continue")
    events, after, actions = _fold(state, LAUNCHED)
    assert events == [] and after == state and actions == [ForgetJoin("h2")]


def test_a_joiner_the_run_ended_without_is_stopped_and_taken_out() -> None:
    ended = sig.JoinEnded("h2", detail="the run ended before rank 0 let it in", running=True)
    events, after, actions = _fold(_two_and_a_joiner(), LAUNCHED, ended)
    assert _names(after) == ("h0", "h1") and after.joining == frozenset()
    assert actions[-3:] == [StopJoiner("h2"), RecordMembers(hosts=("h0", "h1"), left=()),
                            ForgetJoin("h2")]
    assert "join of h2 failed: the run ended before rank 0 let it in" in events[-1].text  # type: ignore[union-attr]


def test_a_host_whose_ranks_said_why_they_ended_is_said_with_their_words() -> None:
    said = "disk full on h1 at /runs/r/metrics: the step event of rank 1 could not be written"
    seen = _membership("left", ("h1",), cause="ranks_died")
    seen = sig.MembershipSeen(replace(seen.event, said=said))
    events, after, _ = _fold(_state(on_host_loss="continue"), seen)
    assert _names(after) == ("h0", "h2")
    assert events[0] == HostStatus(t=T, host="h1", state="left",
                                   detail=f"left at step 7 (ranks_died): {said}")
    assert [e.text for e in events if isinstance(e, LogLine)][-1] == (
        f"corral: h1 left because its ranks ended on: {said}; the run goes on without it "
        "(`corral join h1` once that is fixed)")
