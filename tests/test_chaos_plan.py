"""The chaos run's schedule (bench/_chaos_plan.py) is a pure function of its seed, every fault
in it possible when it comes (a host taken out is one in the run, a join brings back one out
of it, a stop and ``--resume`` brings every worker back), and its invariants are plain
functions of what a run left (bench/_chaos_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._chaos_checks import (
    check_passes,
    members_after,
    named_cause,
    no_lock,
    nothing_left,
    params_match,
    record_agrees,
    went_on,
)
from bench._chaos_plan import ANY_TIME_KINDS, KINDS, OUT_KINDS, Fault, counts, moot, schedule


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert schedule(81, 200) == schedule(81, 200)
    assert schedule(81, 200) != schedule(82, 200)
    assert schedule(81, 50) == schedule(81, 200)[:50]  # a longer run begins as the shorter


@pytest.mark.parametrize("seed", range(20))
def test_every_fault_is_possible_when_it_comes(seed: int) -> None:
    inside, outside = {"n2", "n3"}, set()
    for fault in schedule(seed, 150):
        assert 2 <= fault.after_steps <= 6
        if fault.kind in OUT_KINDS:
            assert fault.host in inside
            inside.remove(fault.host)
            outside.add(fault.host)
        elif fault.kind == "join":
            assert fault.host in outside
            outside.remove(fault.host)
            inside.add(fault.host)
        else:
            assert fault.kind in ANY_TIME_KINDS and fault.host is None
            if fault.kind == "stop_resume":
                inside, outside = {"n2", "n3"}, set()


def test_a_long_schedule_has_every_kind_and_never_the_master() -> None:
    plan = schedule(81, 120)
    assert all(n >= 5 for n in counts(plan).values()), counts(plan)
    assert sum(counts(plan).values()) == 120 and list(counts(plan)) == list(KINDS)
    assert all(fault.host in (None, "n2", "n3") for fault in plan)
    assert [fault.index for fault in plan] == list(range(1, 121))


def test_the_short_ci_schedule_covers_five_kinds() -> None:
    kinds = [fault.kind for fault in schedule(2, 5)]
    assert len(set(kinds)) == 5, kinds


def test_kinds_can_be_chosen_and_a_wrong_one_is_named() -> None:
    assert {f.kind for f in schedule(3, 30, kinds=("leave", "join"))} == {"leave", "join"}
    with pytest.raises(ValueError, match="unknown fault kinds \\['reboot'\\]"):
        schedule(3, 3, kinds=("leave", "reboot"))
    with pytest.raises(ValueError, match="none of \\['join'\\] is possible"):
        schedule(3, 1, kinds=("join",))
    with pytest.raises(ValueError, match="faults must be >= 0"):
        schedule(3, -1)


def test_the_invariants_name_what_broke(tmp_path: Path) -> None:
    assert went_on(10, 12) == [] and "did not go on" in went_on(10, 11)[0]
    assert named_cause({"state": "failed", "detail": "n2: disk full"}) == []
    assert "without a named cause" in named_cause({"state": "failed", "detail": ""})[0]
    assert "did not end" in named_cause({"state": "running"})[0]
    record = {"hosts": ["n1", "n3"]}
    assert record_agrees(record, {"n1", "n3"}, {"n1": [5], "n3": [7]}) == []
    assert "are not the run's ['n1', 'n2', 'n3']" in record_agrees(
        record, {"n1", "n2", "n3"}, {"n1": [5], "n2": [6], "n3": [7]})[0]
    assert "no process of the run on n3" in record_agrees(record, {"n1", "n3"}, {"n1": [5]})[0]
    assert record_agrees({**record, "left_hosts": ["n3"]}, {"n1", "n3"},
                         {"n1": [5], "n3": [7]}) == ["the record has n3 both in the run and left"]
    assert nothing_left({"n1": [], "n2": [4, 5]}, ["n1"]) == []
    assert nothing_left({"n2": [4, 5]}, ["n1", "n2"]) == [
        "2 process(es) of the run left on n2: [4, 5]"]
    assert no_lock(tmp_path) == []
    (tmp_path / ".launch-lock-box").mkdir()
    assert "a launch lock is left" in no_lock(tmp_path)[0]
    assert check_passes(0, "all checks passed") == []
    assert "leftovers FAIL" in check_passes(1, "│ n2 │ leftovers FAIL │")[0]
    assert params_match(3e-7, 40) == [] and "differ from the replay's" in params_match(2e-6, 40)[0]


def test_the_hosts_in_the_run_follow_rank_0s_membership_events() -> None:
    events = [{"change": "left", "hosts": ["n2"], "cause": "unreachable"},
              {"change": "refused", "hosts": ["n3"]},
              {"change": "joined", "hosts": ["n2"]}, {"change": "left", "hosts": ["n3"]}]
    assert members_after({"n1", "n2", "n3"}, events[:1]) == {"n1", "n3"}
    assert members_after({"n1", "n2", "n3"}, events) == {"n1", "n2"}


def test_a_fault_an_unforeseen_resume_made_moot_is_told() -> None:
    every = {"n1", "n2", "n3"}
    assert moot(Fault(7, "join", "n3", 3), every)
    assert not moot(Fault(7, "join", "n3", 3), {"n1", "n2"})
    assert moot(Fault(8, "leave", "n2", 3), {"n1", "n3"})
    assert not moot(Fault(8, "drop_link", "n2", 3), every)
    assert not moot(Fault(9, "stop_resume", None, 3), {"n1"})
