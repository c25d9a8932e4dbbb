"""The watch on a generation's members (trainer/membership/watch.py), the abort of its gloo
connections (abort.py) and what a loss is named (members.loss_cause): the logic, without a
process group (the runs are in test_membership_netns.py)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from trainer.membership.abort import abort_groups, open_sockets
from trainer.membership.members import Alive, Membership, loss_cause
from trainer.membership.plan import Generation
from trainer.membership.store import MemberLost
from trainer.membership.watch import STALE_S, Watch


def test_a_member_still_for_stale_s_aborts_its_generation_while_it_is() -> None:
    aborts: list[int] = []
    watch = Watch(0, lambda: aborts.append(1), armed=True)
    watch.follow((0, 1, 2))
    assert watch.watched() == (1, 2)  # not itself
    watch.observe({1: 1, 2: 1}, now=100.0)
    watch.observe({1: 2, 2: 1}, now=100.0 + STALE_S - 0.1)
    assert aborts == [] and watch.tripped_at is None
    watch.observe({1: 3, 2: 1}, now=100.0 + STALE_S)  # 2 has not moved since 100.0
    assert aborts == [1] and watch.tripped_at is not None
    assert watch.stale(2, now=100.0 + STALE_S) and not watch.stale(1, now=100.0 + STALE_S)
    tripped = watch.tripped_at
    watch.observe({1: 4, 2: 1}, now=100.0 + 2 * STALE_S)
    assert aborts == [1, 1] and watch.tripped_at == tripped  # connections made since go too
    watch.follow((0, 1))  # the next generation, without 2: nothing to abort
    assert watch.tripped_at is None
    watch.observe({1: 5}, now=100.0 + 3 * STALE_S)
    assert aborts == [1, 1]


def test_a_member_not_started_or_a_watch_not_armed_judges_nobody() -> None:
    aborts: list[int] = []
    watch = Watch(0, lambda: aborts.append(1), armed=False)
    watch.follow((0, 3, 4))
    assert not watch.stale(3, now=1e9)  # never read
    watch.observe({3: 0, 4: 1}, now=0.0)
    watch.observe({3: 0, 4: 1}, now=2 * STALE_S)
    assert not watch.stale(3, now=2 * STALE_S) and watch.never_beat(3)  # never beat
    assert watch.stale(4, now=2 * STALE_S) and aborts == []  # not armed: a rank's start
    watch.arm()
    watch.observe({3: 0, 4: 1}, now=3 * STALE_S)
    assert aborts == [1]


def test_the_abort_shuts_the_connections_down_and_keeps_the_stores() -> None:
    before = open_sockets()  # this test process's own: never touched
    with socket.create_server(("127.0.0.1", 0)) as group_listener, \
            socket.create_server(("127.0.0.1", 0)) as store_listener:
        group = socket.create_connection(group_listener.getsockname())
        group_peer, _ = group_listener.accept()
        store = socket.create_connection(store_listener.getsockname())
        store_peer, _ = store_listener.accept()
        try:
            assert abort_groups("gloo", store_listener.getsockname()[1], before) == 2  # both ends
            group_peer.settimeout(5)
            assert group_peer.recv(1) == b""  # closed, as after a killed peer
            store.sendall(b"x")  # the store's connection still carries
            store_peer.settimeout(5)
            assert store_peer.recv(1) == b"x"
            assert group.fileno() >= 0  # shut down, not closed: gloo closes its own
        finally:
            for sock in (group, group_peer, store, store_peer):
                sock.close()


def alive(failed_at: float, tripped_at: float | None) -> Alive:
    return Alive(steps=3, in_step=True, failed_at=failed_at, tripped_at=tripped_at)


def test_a_loss_is_named_by_what_came_first() -> None:
    # A connection closed well before any heartbeat was found still: the ranks died.
    assert loss_cause([alive(10.0, None), alive(12.5, 12.4)]) == "ranks_died"
    assert loss_cause([alive(10.0, None)]) == "ranks_died"
    # Every failure came with or after the first watch's abort: nothing closed, unreachable.
    assert loss_cause([alive(12.45, 12.4), alive(12.5, None)]) == "unreachable"


def test_only_a_lost_member_is_taken_for_a_loss() -> None:
    watch = Watch(1, lambda: None, armed=True)
    store = SimpleNamespace(watch=watch)
    member = Membership(store, Generation(0, (0, 1), ("h0", "h1")), 1,  # type: ignore[arg-type]
                        leave_file="/nonexistent")
    gloo = "[pair.cc:553] Connection closed by peer [10.77.0.3]:4242"
    assert member.is_loss(RuntimeError(gloo))
    assert member.is_loss(MemberLost("member(s) [3] lost while generation 2 formed"))
    # This rank's own failure: raised as it is (the survivors lose this rank instead).
    assert not member.is_loss(RuntimeError("CUDA out of memory"))
    watch.tripped_at = 1.0  # after its own watch aborted the generation, any failure is one
    assert member.is_loss(RuntimeError("CUDA out of memory"))
