"""A rank cut off from its run ends by itself (issue 81, item 1; trainer/membership/reach.py):
the watchdog's logic without a process, then a live run on network-namespace hosts whose third
host's traffic is DROPped mid-run: the survivors go on, and the cut-off rank, which hears
nothing (no connection closes), ends within ``CUT_OFF_S`` of the store's last answer, saying
why, instead of waiting out the group's 30-minute timeout."""

from __future__ import annotations

import threading

from trainer.membership.plan import Generation, NextGeneration
from trainer.membership.reach import (
    DROPPED_GRACE_S,
    STARVED_S,
    TICK_S,
    Dropped,
    Reach,
    watch_reach,
)
from trainer.membership.store import left_out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_store_silent_for_the_limit_cuts_the_rank_off_and_an_answer_keeps_it() -> None:
    clock = Clock()
    reach = Reach(limit_s=30.0, clock=clock)
    for _ in range(29):  # the watchdog looks each second; the store answered at 1000
        clock.now += 1.0
        assert not reach.cut_off()
    clock.now += 1.0
    assert reach.cut_off()
    reach.heard()  # an answer: a fresh window
    clock.now += 1.0
    assert not reach.cut_off()
    reach.stop()  # left, or done with the store: never cut off
    clock.now += 100.0
    assert not reach.cut_off()


def test_a_watchdog_kept_from_running_is_not_a_cut() -> None:
    clock = Clock()
    reach = Reach(limit_s=30.0, clock=clock)
    clock.now += STARVED_S + 40.0  # the main thread held the interpreter: nobody ran
    assert not reach.cut_off()
    for _ in range(29):  # from then on it looks each second
        clock.now += 1.0
        assert not reach.cut_off()
    clock.now += 1.0
    assert reach.cut_off()


def test_the_watchdog_thread_ends_a_cut_off_rank_once() -> None:
    ended: list[tuple[str, float]] = []
    done = threading.Event()
    reach = Reach(limit_s=0.0)

    def end(where: str, limit: float) -> None:
        ended.append((where, limit))
        done.set()

    watch_reach(reach, "10.0.0.1:29400", end)
    assert done.wait(timeout=30 * TICK_S)
    assert ended == [("10.0.0.1:29400", 0.0)]


def test_a_rank_left_out_of_the_next_generation_for_the_grace_ends_and_one_in_it_never() -> None:
    clock = Clock()
    dropped = Dropped(clock=clock)
    assert not dropped.seen(False)  # no plan after a loss, or one that keeps this rank
    assert not dropped.seen(True)  # left out: the grace starts (it may leave by itself)
    clock.now += DROPPED_GRACE_S - 0.5
    assert not dropped.seen(True)
    clock.now += 0.5
    assert dropped.seen(True)
    assert not dropped.seen(False)  # in a later generation again: a fresh start
    clock.now += 100.0
    assert not dropped.seen(True)


class Plans:
    """The store as the heartbeat reads it: rank 0's plans by key."""

    def __init__(self, plans: dict[str, NextGeneration]) -> None:
        self.plans, self.reads = plans, 0

    def check(self, keys: list[str]) -> bool:
        return all(key in self.plans for key in keys)

    def get(self, key: str) -> bytes:
        self.reads += 1
        return self.plans[key].to_json().encode()


def test_the_plan_after_a_loss_tells_the_members_it_left_out() -> None:
    plan = NextGeneration(generation=Generation(4, (0, 1), ("n1", "n2")), step=20,
                          split=(16, 16), kept=(0, 1), change="left", hosts=("n3",),
                          cause="unreachable")
    store = Plans({"plan/3/loss": plan})
    read: dict[int, bool] = {}
    assert left_out(store, 3, 2, read)
    assert not left_out(store, 3, 1, {})
    assert not left_out(store, 4, 2, read)  # no loss in generation 4 (yet)
    assert left_out(store, 3, 2, read) and store.reads == 2


