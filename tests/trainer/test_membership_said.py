"""A rank that ends on an error of its own under live membership (a full disk: nothing it writes
on its host reaches the user) leaves its words in the run's store; rank 0 puts them in the
event of its host's loss (``MembershipEvent.said``), through the plan every survivor reads.
Found by the chaos run (bench/chaos.py seed 81): a host's rank ended by a full disk was said
only as ``left at step N (ranks_died)``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from trainer.disk_full import DiskFull
from trainer.membership.contract import HOST_LOSS_ENV
from trainer.membership.members import Alive, Membership
from trainer.membership.plan import Generation, NextGeneration

GEN = Generation(3, (0, 1, 2), ("h0", "h1", "h2"))


class FakeStore:
    """The run's store as a dict; ``ended`` members' connections are closed."""

    def __init__(self, ended: frozenset[int] = frozenset(), broken: bool = False) -> None:
        self.values: dict[str, str] = {}
        self.ended, self.broken = ended, broken
        self.watch = None

    def set(self, key: str, value: str) -> None:
        if self.broken:
            raise RuntimeError("Connection reset by peer")
        self.values[key] = value

    def get(self, key: str) -> str:
        return self.values[key]

    def has(self, key: str) -> bool:
        return key in self.values

    def gone(self, member: int, answered: str) -> str | None:
        return "closed" if member in self.ended else None


def _member(store: FakeStore, member: int, tmp_path: Path) -> Membership:
    return Membership(store, GEN, member, str(tmp_path / f"leave-{member}"))  # type: ignore[arg-type]


def test_a_rank_ended_by_a_full_disk_is_said_in_the_loss_of_its_host(tmp_path: Path) -> None:
    store = FakeStore(ended=frozenset({2}))
    full = DiskFull("/runs/r/metrics", "the step event of rank 2 could not be written",
                    host="h2")
    _member(store, 2, tmp_path).say(full.cause)
    store.set("alive/3/1", json.dumps(asdict(Alive(steps=40, in_step=True, failed_at=1.0,
                                                   tripped_at=None))))
    plan = _member(store, 0, tmp_path).after_loss(40, True, (3, 3, 2), 8)
    assert plan.hosts == ("h2",) and plan.cause == "ranks_died"
    assert plan.said == ("disk full on h2 at /runs/r/metrics: the step event of rank 2 could "
                         "not be written")
    assert NextGeneration.from_json(plan.to_json()) == plan  # every survivor reads the same


def test_a_host_lost_without_a_word_has_none_and_a_gone_store_takes_none(
        tmp_path: Path) -> None:
    store = FakeStore(ended=frozenset({2}))
    store.set("alive/3/1", json.dumps(asdict(Alive(steps=40, in_step=False, failed_at=1.0,
                                                   tripped_at=None))))
    assert _member(store, 0, tmp_path).after_loss(40, False, (3, 3, 2), 8).said is None
    _member(FakeStore(broken=True), 2, tmp_path).say("disk full on h2 at /x")  # no error


def test_under_on_host_loss_stop_nothing_is_sent(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # nobody goes on to say it; a store that no longer answers could hold the rank's end
    monkeypatch.setenv(HOST_LOSS_ENV, "stop")
    store = FakeStore()
    _member(store, 2, tmp_path).say("disk full on h2 at /x")
    assert store.values == {}
