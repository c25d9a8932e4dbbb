"""The generations driver (trainer/membership/generations.py) in one process, with a fake loop
and a fake membership that answers as rank 0 would: each case a row of what happens and the
calls the driver makes, in order. No process group and no process is started."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from trainer.event_log import EventWriter
from trainer.membership import generations as generations_module
from trainer.membership.generations import FixedGroup, Generations
from trainer.membership.members import JOINER_FIRST_SHARE, Membership
from trainer.membership.plan import Generation, NextGeneration, resplit
from trainer.step.step_records import RunProgress

GLOBAL_BATCH = 32
START = Generation(0, (0, 1, 2, 3), ("h0", "h1", "h2", "h3"))
"""The generation the run is in: this rank is member 1 (rank 1) on h1."""
SPLIT = (8, 8, 8, 8)
SENT = 7
"""The bytes the fake state broadcast reports."""


def _without(before: Generation, split: tuple[int, ...], hosts: tuple[str, ...],
             redone: int = 0) -> NextGeneration:
    kept = tuple(r for r, h in enumerate(before.hosts) if h not in hosts)
    return NextGeneration(
        generation=Generation(before.number + 1, tuple(before.members[r] for r in kept),
                              tuple(before.hosts[r] for r in kept)),
        step=4, split=resplit(split, kept, GLOBAL_BATCH), kept=kept, change="left",
        hosts=hosts, cause="ranks_died", redone_steps=redone)


LOSE_H3 = _without(START, SPLIT, ("h3",), redone=1)
LOSE_H2_TOO = _without(LOSE_H3.generation, LOSE_H3.split, ("h2",), redone=1)
CUT_OFF = _without(START, SPLIT, ("h1",), redone=1)
JOIN_KEPT = (0, 1, 2, 3, None)
JOIN_H4 = NextGeneration(
    generation=Generation(1, (*START.members, 4), (*START.hosts, "h4")), step=4,
    split=resplit(SPLIT, JOIN_KEPT, GLOBAL_BATCH, JOINER_FIRST_SHARE), kept=JOIN_KEPT,
    change="joined", hosts=("h4",), state_from=0)
JOINER_LOST = NextGeneration(
    generation=Generation(2, START.members, START.hosts), step=4,
    split=resplit(JOIN_H4.split, (0, 1, 2, 3), GLOBAL_BATCH), kept=(0, 1, 2, 3), change="left",
    hosts=("h4",), cause="ranks_died")


class FakeMembership:
    """``Membership``'s answers, scripted: the plans rank 0 would decide, in order, and the
    formings that fail (a member lost while the generation forms)."""

    def __init__(self, plans: list[NextGeneration], failing_formings: int) -> None:
        self.plans, self.failing = list(plans), failing_formings
        self.generation, self.member = START, 1
        self.joining: NextGeneration | None = None
        self.log: list[str] = []
        self.store = SimpleNamespace(end_generation=lambda: self.log.append("abort peers"))

    @property
    def rank(self) -> int:
        return self.generation.members.index(self.member)

    def is_loss(self, exc: BaseException) -> bool:
        return "connection closed" in str(exc)

    def after_loss(self, completed: int, in_step: bool, split: Any, global_batch: int
                   ) -> NextGeneration:
        self.log.append(f"alive after {completed} steps, in step {in_step}, "
                        f"split {tuple(split)}")
        return self.plans.pop(0)

    def at_boundary(self, tallies: Any, step: int, split: Any, global_batch: int,
                    events: Any) -> NextGeneration | None:
        self.log.append(f"boundary at {step}, split {tuple(split)}")
        return self.plans.pop(0) if self.plans else None

    def form(self, backend: str, device: torch.device) -> None:
        self.log.append(f"form {self.generation.number}")
        if self.failing:
            self.failing -= 1
            raise RuntimeError("connection closed: a member was lost while it formed")

    def unfinished(self, plan: NextGeneration, events: Any) -> None:
        self.log.append(f"unfinished {plan.generation.number}")

    def changed(self, plan: NextGeneration, seen: float, state_bytes: int) -> None:
        self.log.append(f"changed to {plan.generation.number}, {state_bytes} bytes sent")

    def report(self, events: Any) -> None:
        self.log.append("report")

    def leave(self) -> None:
        self.log.append("leave")


@dataclass
class FakeLoop:
    """A loop's own part: its place, its parts, its state."""

    log: list[str]
    split: tuple[int, ...] = SPLIT
    loaded: dict[str, Any] | None = None
    parts: int = 0
    """Times its parts were made."""

    def take_place(self, plan: NextGeneration, rank: int) -> None:
        self.log.append(f"take place: rank {rank} of {len(plan.generation.members)}")
        self.split = plan.split

    def reform(self) -> None:
        self.log.append("reform")
        self.parts += 1

    def training_state(self) -> dict[str, Any]:
        return {"step": 4}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.log.append("load state")
        self.loaded = state


@dataclass
class Case:
    name: str
    at: str
    """``step``: a collective of step 5 fails; ``boundary``: after step 4, the tallies."""
    plans: list[NextGeneration]
    log: list[str]
    """The driver's calls, in order."""
    failing_formings: int = 0
    left: bool = False
    split: tuple[int, ...] = SPLIT
    """The loop's split after it."""
    state: dict[str, Any] | None = None
    """The training state the loop loaded."""
    parts: int = 0


CASES = [
    Case("a loss mid-step re-forms once, the step to be redone", "step", [LOSE_H3], [
        "abort peers", "alive after 4 steps, in step True, split (8, 8, 8, 8)",
        "take place: rank 1 of 3", "form 1", "reform", "changed to 1, 0 bytes sent"],
        split=LOSE_H3.split, parts=1),
    Case("a second loss while forming is retried from the generation that did not form",
         "step", [LOSE_H3, LOSE_H2_TOO], [
             "abort peers", "alive after 4 steps, in step True, split (8, 8, 8, 8)",
             "take place: rank 1 of 3", "form 1", "unfinished 1",
             f"alive after 4 steps, in step True, split {LOSE_H3.split}",
             "take place: rank 1 of 2", "form 2", "reform", "changed to 2, 0 bytes sent"],
         failing_formings=1, split=LOSE_H2_TOO.split, parts=1),
    Case("this rank not in the plan leaves", "step", [CUT_OFF], [
        "abort peers", "alive after 4 steps, in step True, split (8, 8, 8, 8)", "leave"],
        left=True),
    Case("a join at a boundary: the state loaded, the joiner given a share", "boundary",
         [JOIN_H4], [
             "report", "boundary at 4, split (8, 8, 8, 8)", "take place: rank 1 of 5",
             "form 1", "reform", "load state", "changed to 1, 7 bytes sent"],
         split=JOIN_H4.split, state={"step": 4}, parts=1),
    Case("a forming at a boundary that loses a member goes on without it", "boundary",
         [JOIN_H4, JOINER_LOST], [
             "report", "boundary at 4, split (8, 8, 8, 8)", "take place: rank 1 of 5",
             "form 1", "unfinished 1", "abort peers",
             f"alive after 4 steps, in step False, split {JOIN_H4.split}",
             "take place: rank 1 of 4", "form 2", "reform", "changed to 2, 0 bytes sent"],
         failing_formings=1, split=JOINER_LOST.split, parts=1),
]


def _driver(case: Case, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[Generations, FakeMembership, FakeLoop, RunProgress]:
    def broadcast(state: Any, source: int, rank: int, device: torch.device
                  ) -> tuple[int, dict[str, Any] | None]:
        return SENT, (None if rank == source else {"step": 4})

    monkeypatch.setattr(generations_module, "broadcast_state", broadcast)
    membership = FakeMembership(case.plans, case.failing_formings)
    loop = FakeLoop(membership.log)
    run = RunProgress(total_steps=10, step=4, split=SPLIT)
    events = cast(EventWriter, SimpleNamespace(members=None))
    driver = Generations(cast(Membership, membership), loop, events, run, backend="gloo",
                         device=torch.device("cpu"), global_batch=GLOBAL_BATCH,
                         abort_on_loss=True)
    return driver, membership, loop, run


def _lost_step() -> torch.Tensor:
    torch.rand(5)  # the step draws, then a peer is lost
    raise RuntimeError("[gloo] connection closed by peer")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_driver_holds_the_skeleton_of_every_change(case: Case,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    driver, membership, loop, run = _driver(case, monkeypatch)
    if case.at == "step":
        assert driver.step(_lost_step, 5) is None
    else:
        assert driver.boundary([]) is (not case.left)
    assert membership.log == case.log
    assert run.left is case.left
    assert loop.split == case.split and sum(loop.split) == GLOBAL_BATCH
    assert loop.loaded == case.state
    assert loop.parts == case.parts
    assert not membership.plans  # every plan was read


def test_a_step_lost_midway_is_redone_with_the_rng_it_started_with(
        monkeypatch: pytest.MonkeyPatch) -> None:
    driver, _, _, run = _driver(CASES[0], monkeypatch)
    torch.manual_seed(3)
    draws: list[torch.Tensor] = []

    def step(lose: bool) -> int:
        draws.append(torch.rand(5))
        if lose:
            raise RuntimeError("[gloo] connection closed by peer")
        run.step = 5
        return 5

    assert driver.step(lambda: step(lose=True), 5) is None
    assert run.step == 4  # not applied: the new generation runs step 5
    assert driver.step(lambda: step(lose=False), 5) == 5
    assert torch.equal(draws[0], draws[1])  # the same samples, dropout and noise


def test_a_joiner_takes_the_state_of_the_generation_that_admitted_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    driver, membership, loop, _ = _driver(CASES[0], monkeypatch)
    membership.generation, membership.member = JOIN_H4.generation, 4
    membership.joining, membership.plans = JOIN_H4, []
    driver.admitted()
    assert membership.log == ["load state", "changed to 1, 7 bytes sent"]
    assert loop.loaded == {"step": 4}


def test_an_error_that_is_no_loss_is_the_rank_s_own_and_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    driver, membership, _, _ = _driver(CASES[0], monkeypatch)

    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        driver.step(broken, 5)
    assert membership.log == []  # no plan asked for: the others lose this rank


def test_a_fixed_group_runs_the_work_and_raises_its_errors() -> None:
    group = FixedGroup()
    assert group.step(lambda: 5, 5) == 5 and group.guarded(lambda: None)
    assert group.boundary([]) and group.flags is None and group.make_group is None
    with pytest.raises(RuntimeError, match="connection closed"):
        group.step(_lost_step, 5)
