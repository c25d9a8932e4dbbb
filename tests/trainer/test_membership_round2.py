"""Live membership made cheap (issue 61, round 2): a joiner's set-up done before it asks in, and
a member whose process died known from its store connection closing (trainer/membership/),
without a process group (the runs are in test_live_membership.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from spawn_ranks import free_port
from trainer_runs import REPO, rank_env

from trainer.membership import liveness
from trainer.membership.liveness import Liveness
from trainer.membership.members import loss_cause
from trainer.membership.store import MemberLost, MembershipStore
from trainer.membership.watch import STALE_S

WARM = """
import sys
from trainer.step.optim import warm_up
from trainer.settings.train_config import TrainConfig
assert "torch._dynamo" not in sys.modules, "imported before the warm-up: nothing to prove"
warm_up(TrainConfig(optimizer=sys.argv[1]))
assert "torch._dynamo" in sys.modules
"""


def test_a_joiner_makes_its_optimizer_s_imports_before_it_asks_in() -> None:
    # What the run would wait for at the boundary that admits the joiner: the first making of
    # an optimizer imports torch._dynamo (seconds). A process of its own: imports are global.
    done = subprocess.run([sys.executable, "-c", WARM, "adamw"], cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@contextmanager
def rank0_and_member(members: tuple[int, ...]) -> Iterator[tuple[MembershipStore, Liveness,
                                                                 MembershipStore]]:
    """Rank 0's store (it serves it) watching ``members``, and member 1 beating, once rank 0
    found its side of member 1's store connection."""
    port = free_port()
    rank0 = MembershipStore("127.0.0.1", port, serve=True)
    member = MembershipStore("127.0.0.1", port, serve=False)
    try:
        rank0.start_heartbeat(0, armed=True)
        seen = rank0.liveness
        assert rank0.watch is not None and seen is not None
        rank0.watch.follow(members)
        member.start_heartbeat(1, armed=True)  # publishes where its connection comes from
        until("rank 0 sees member 1's connection", lambda: 1 in seen.sides)
        yield rank0, seen, member
    finally:
        rank0.stop_heartbeat()
        member.stop_heartbeat()


def test_rank_0_knows_a_member_s_process_ended_when_its_store_connection_closes() -> None:
    with rank0_and_member((0, 1)) as (rank0, seen, member):
        assert rank0.watch is not None
        assert not rank0.watch.lost(1) and not seen.closed(2)  # 2: never seen
        member.stop_heartbeat()  # its thread ends and its connection closes, as at a kill
        until("the connection closed", lambda: seen.closed(1))
        # Well before its heartbeat could be still for STALE_S: gone, and how.
        assert rank0.gone(1, "alive/0/1") == "closed" and not rank0.watch.stale(1)
    assert loss_cause([], ["silent", "closed"]) == "ranks_died"


def test_a_member_lost_before_an_active_set_s_group_forms_fails_the_forming_at_once() -> None:
    # Before: the others waited in the store for its address for STORE_TIMEOUT (30 min).
    with rank0_and_member((0, 1, 2)) as (rank0, _, member):
        member.stop_heartbeat()  # member 1's process ends before it reaches the group
        started = time.monotonic()
        with pytest.raises(MemberLost, match=r"\[1\] lost while a group formed"):
            # Ranks 0 and 1 of a generation whose rank 2 (member 2) sits out.
            rank0.new_group("ready/0/group1", (0, 1), 0, [0, 1], "gloo")
        assert time.monotonic() - started < STALE_S + 30  # not the store's 30 minutes


def test_an_address_reads_the_same_from_either_table() -> None:
    # /proc/net/tcp prints an address as 32-bit words in the machine's order; tcp6 holds a
    # v4 client of a dual-stack listener as an IPv4-mapped address: one ``ip:port`` for both.
    v4 = (127 << 24 | 1).to_bytes(4, "big")
    word = int.from_bytes(v4, sys.byteorder)
    assert liveness._address(f"{word:08X}:7530") == "127.0.0.1:30000"
    mapped = bytes(10) + b"\xff\xff" + v4
    words = "".join(f"{int.from_bytes(mapped[i:i + 4], sys.byteorder):08X}"
                    for i in range(0, 16, 4))
    assert liveness._address(f"{words}:0050") == "127.0.0.1:80"


def until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)
