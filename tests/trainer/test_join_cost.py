"""A join's cost by phase (issue 78): ``corral join``'s check and push reach the joiner in its
environment, the joiner adds its start and announces them, rank 0 adds the admission and the
``joined`` event carries them, in order; a refusal or a leave carries none."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from trainer.events import MembershipEvent, event_from_dict, event_to_dict
from trainer.membership.join_cost import (
    JOIN_PHASES_ENV,
    admitted_phases,
    joiner_phases,
    process_age,
)
from trainer.membership.members import Membership
from trainer.membership.plan import Generation, NextGeneration


class DictStore:
    """The membership store's keys and counters, in a dict (no socket)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def set(self, key: str, value: str) -> None:
        self.values[key] = value

    def get(self, key: str) -> str:
        return self.values[key]

    def count(self, key: str, by: int = 0) -> int:
        self.counts[key] = self.counts.get(key, 0) + by
        return self.counts[key]


class Events:
    def __init__(self) -> None:
        self.emitted: list[Any] = []

    def emit(self, event: Any) -> None:
        self.emitted.append(event)


def test_the_joiner_announces_corral_joins_phases_and_its_own_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JOIN_PHASES_ENV, json.dumps({"check": 2.5, "push": 0.75, "other": 1}))
    phases = joiner_phases()
    assert (phases["check"], phases["push"]) == (2.5, 0.75) and "other" not in phases
    if process_age(os.getppid()) is not None:  # Linux: the launcher's age is the start
        assert phases["start"] >= 0.0
    monkeypatch.setenv(JOIN_PHASES_ENV, "not json")
    assert set(joiner_phases()) <= {"start"}


def test_the_joiners_start_is_cut_into_its_launcher_its_setup_and_its_warm_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ages = {os.getppid(): 5.0, os.getpid(): 3.5}  # the launcher's age, this rank's
    monkeypatch.setattr("trainer.membership.join_cost.process_age", ages.get)
    monkeypatch.delenv(JOIN_PHASES_ENV, raising=False)
    assert joiner_phases(1.25) == {"start": 5.0, "launcher": 1.5, "setup": 2.25,
                                   "warm_up": 1.25}
    assert joiner_phases() == {"start": 5.0}  # no warm-up measured: the whole start only
    event = MembershipEvent(t=0.0, rank=0, generation=1, step=3, change="joined",
                            hosts=("gamma",), world_size=3,
                            phases=admitted_phases({"check": 1.0, **joiner_phases(1.25)}, 0.5))
    assert list(event.phases) == ["check", "start", "launcher", "setup", "warm_up",
                                  "admission"]
    assert event.phases_text() == ("check 1.0 s, start 5.0 s (launcher 1.5 s, setup 2.2 s, "
                                   "warm_up 1.2 s), admission 0.5 s")


def test_the_joined_event_carries_the_phases_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    store = DictStore()
    rank0 = Membership(store, Generation(0, (0, 1), ("alpha", "beta")), 0,  # type: ignore[arg-type]
                       "/nonexistent/leave")
    joiner = {"host": "gamma", "phases": {"start": 3.25, "check": 1.5, "push": 0.5}}
    store.set(f"joiner/{store.count('joiners/next', 1)}", json.dumps(joiner))
    events = Events()
    plan = rank0._admit("plan/0/7", 7, (30, 30), 60, events)  # type: ignore[arg-type]
    assert plan is not None and plan.hosts == ("gamma",)
    assert NextGeneration.from_json(plan.to_json()).phases == joiner["phases"]
    rank0.changed(plan, seen=0.0, state_bytes=1000)
    rank0.report(events)  # type: ignore[arg-type]
    [event] = events.emitted
    assert event.change == "joined" and list(event.phases) == ["check", "push", "start",
                                                                 "admission"]
    assert event.phases["admission"] == event.seconds_to_step
    assert event.phases_text().startswith("check 1.5 s, push 0.5 s, start 3.2 s, admission ")
    back = event_from_dict(json.loads(json.dumps(event_to_dict(event))))
    assert isinstance(back, MembershipEvent) and back.phases == event.phases


def test_a_leave_carries_no_phases() -> None:
    assert admitted_phases({}, 0.5) == {"admission": 0.5}
    left = MembershipEvent(t=0.0, rank=0, generation=1, step=3, change="left",
                           hosts=("beta",), world_size=1)
    assert left.phases == {} and left.phases_text() == ""
