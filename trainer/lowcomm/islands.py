"""Islands joining and leaving a low-communication run at an outer step (live membership,
docs/lowcomm.md "Islands joining and leaving"): ``LocalTrainer``'s side, kept here.

With ``CORRAL_MEMBERSHIP_PORT`` an island is a host, and every change waits for a round's end,
where every rank holds the anchor:
- a planned leave (the host's leave request, carried in the round's tally) takes effect after
  the round it was seen in: the leaver finished that round and its change is in the average;
  its error-feedback residual leaves with it;
- a lost island (its ranks killed, its link cut) is dropped from the round it was lost in: the
  survivors finish their inner steps, their exchange fails, and in the next generation they
  redo the exchange over the islands that completed the round (their residuals as before the
  failed try, the weights their own samples); if some survivor had already applied the round
  (the island was lost after its change was exchanged), that survivor's outer state is sent to
  the others instead and nothing is dropped;
- a joiner is admitted at a round's end: rank 0 sends it the anchor (= every rank's trained
  parameters; its buffers stay its own), the outer optimizer's momentum, the step, the
  islands' speeds and the round length; its inner optimizer and its error-feedback residual
  start at zero, and its island's speed is the mean of the others' until measured.
Without the port none of this runs (``self.membership`` is None).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from trainer.dist import on_any_rank
from trainer.event_log import EventWriter
from trainer.lowcomm.outer import IslandGroups, OuterStep
from trainer.lowcomm.plan import RoundPlan, island_split, islands_of
from trainer.lowcomm.saving import RoundSaver
from trainer.lowcomm.steps import InnerSteps, RoundTally
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration, config_for
from trainer.membership.state import broadcast_state
from trainer.settings.train_config import TrainConfig
from trainer.step.slowdown import SlowdownSchedule, emulates
from trainer.step.step_records import RunProgress

T = TypeVar("T")


class IslandChanges:
    """Mixed into ``LocalTrainer`` (trainer/lowcomm/rounds.py), whose attributes these are."""

    membership: Membership | None
    config: TrainConfig
    run: RunProgress
    events: EventWriter
    groups: IslandGroups
    inner: InnerSteps
    outer: OuterStep
    saver: RoundSaver
    backend: str
    device: torch.device
    rank: int
    world: int
    split: tuple[int, ...]
    speeds: list[float]
    round_steps: int | None
    dropped: tuple[str, ...] = ()
    """Hosts lost during the round under way, left out of its average (its event says so)."""
    carried_speeds: dict[str, float] | None = None
    """While a generation forms: each island's speed by host, as before the change (kept when
    the forming fails and is retried)."""

    def _gather(self, mine: RoundTally) -> list[RoundTally]:
        raise NotImplementedError

    def make_groups(self) -> IslandGroups:
        raise NotImplementedError

    def island_hosts(self) -> tuple[str, ...]:
        """Each island's host (islands are hosts with live membership); empty without it."""
        if self.membership is None:
            return ()
        hosts = self.membership.generation.hosts
        return tuple(hosts[ranks[0]] for ranks in self.groups.islands)

    # -- a round's end: the exchange and the tallies, surviving a lost island -------------
    def finish_round(self, plan: RoundPlan, mine: RoundTally, weights: list[int],
                     exchange: Callable[[list[int]], None]) -> list[RoundTally] | None:
        """``exchange(weights)`` (the outer step) and the round's tallies; with live membership
        an island lost meanwhile is dropped and the survivors go on in the next generation.
        None: this rank's own host was cut off and is out."""
        self.dropped = ()
        if self.membership is None:
            exchange(weights)
            return self._gather(mine)
        mine.leave, mine.joiners = self.membership.flags()
        feedback, hosts = self.outer.feedback, self.island_hosts()
        before = feedback.residual.clone() if feedback is not None else None
        applied = False
        try:
            exchange(weights)
            applied = True
            return self._gather(mine)
        except RuntimeError as exc:
            error = exc

        def redo(nxt: NextGeneration) -> list[RoundTally]:
            nonlocal applied
            if nxt.step < plan.last_step:  # nobody applied the round: redo it without them
                if self.outer.feedback is not None and before is not None:
                    self.outer.feedback.residual = before.clone()
                kept = self.island_hosts()
                self.dropped = tuple(h for h in hosts if h not in kept)
                exchange([weights[hosts.index(h)] for h in kept])
                applied = True
            return self._gather(mine)

        return self.survive(error, lambda: plan.last_step if applied else plan.first_step - 1,
                            redo)

    def between_rounds(self, work: Callable[[], None]) -> bool:
        """``work()`` after a completed round (evaluation, checkpoint); with live membership a
        member lost during it leaves the round standing and the survivors go on without it
        (that work not done again). False: this rank's own host was cut off and is out."""
        try:
            work()
        except RuntimeError as exc:
            if self.membership is None:
                raise
            return self.survive(exc, lambda: self.run.step, lambda _: True) is not None
        return True

    def survive(self, error: RuntimeError, done: Callable[[], int],
                then: Callable[[NextGeneration], T]) -> T | None:
        """After a failed collective: the survivors' next generation (``done()``: this rank's
        completed steps), formed here, then ``then(plan)``; both again without whoever is lost
        meanwhile. Raises ``error`` when nobody was lost (this rank's own failure); None when
        this rank's host is out."""
        assert self.membership is not None
        seen = time.monotonic()
        while True:
            if not self.membership.is_loss(error):
                raise error
            nxt = self.membership.after_loss(done(), False, self.split,
                                             self.config.global_batch)
            if not nxt.hosts:
                raise error
            if self.membership.member not in nxt.generation.members:
                self._leave()
                return None
            try:
                self.regenerate(nxt, seen)
                return then(nxt)
            except RuntimeError as again:
                self.membership.unfinished(nxt, self.events)
                error = again

    def at_boundary(self, tallies: list[RoundTally]) -> bool:
        """After a completed round: the change its tallies ask for (a leave, a join), if any.
        False when this rank's host leaves (or was cut off meanwhile)."""
        if self.membership is None:
            return True
        seen = time.monotonic()
        self.membership.report(self.events)  # the last change's event, after a whole round
        plan = self.membership.at_boundary(tallies, self.run.step, self.split,
                                           self.config.global_batch, self.events)
        if plan is None:
            return True
        if self.membership.member not in plan.generation.members:
            self._leave()
            return False
        try:
            self.regenerate(plan, seen)
        except RuntimeError as exc:  # a member lost while the generation formed
            self.membership.unfinished(plan, self.events)
            return self.survive(exc, lambda: self.run.step, lambda _: True) is not None
        return True

    def _leave(self) -> None:
        assert self.membership is not None
        self.membership.leave()
        self.run.left = True

    # -- the next generation, in the same processes -----------------------------------------
    def regenerate(self, plan: NextGeneration, seen: float) -> None:
        """Form ``plan``'s generation: this rank's new place, the new group, the islands made
        on it (kept islands keep their speed, inner optimizer and residual), then the outer
        state from ``plan.state_from`` where it is needed (a joiner)."""
        assert self.membership is not None
        if self.carried_speeds is None:  # a forming retried keeps what the first one found
            self.carried_speeds = dict(zip(self.island_hosts(), self.speeds, strict=True))
        before = self.carried_speeds
        self.membership.generation = plan.generation
        self.rank, self.world = self.membership.rank, len(plan.generation.members)
        self.events.members = plan.generation.members
        self.config = config_for(self.config, plan.kept, plan.split)
        self.split = plan.split
        self.inner.slowdown = SlowdownSchedule(self.config.slowdown_for(self.rank), (), self.rank)
        self.membership.form(self.backend, self.device)
        self.regroup(self.make_groups())
        known = list(before.values())
        self.speeds = [before.get(h, statistics.fmean(known)) for h in self.island_hosts()]
        self.take_state(plan, seen)
        self.carried_speeds = None

    def regroup(self, groups: IslandGroups) -> None:
        """Every part that holds the islands' groups takes the new ones (collective: the
        groups, then whether some rank emulates a slowdown)."""
        self.groups = self.inner.groups = self.saver.groups = groups
        self.inner.shares = island_split(self.split, groups.ranks, self.config.global_batch)
        self.inner.emulated = on_any_rank(
            emulates(self.config.slowdown, self.config.slowdown_at), self.device)
        self.outer.regroup(groups)

    def take_state(self, plan: NextGeneration, seen: float) -> None:
        """The outer state from ``plan.state_from`` to every other rank of the generation (a
        joiner; a survivor that had not applied the round the sender applied)."""
        assert self.membership is not None
        sent = 0
        if plan.state_from is not None:
            sent, state = broadcast_state(self.outer_state, plan.state_from, self.rank,
                                          self.device)
            if state is not None:
                self.load_outer_state(state)
        self.membership.changed(plan, seen, sent)

    def outer_state(self) -> dict[str, Any]:
        """What a rank needs to start the next round as every other one: the anchor (the
        trained parameters at a round's end; not the buffers, an island's own, as a replay's
        island that was outside the rounds keeps its own), the outer momentum, the step, the
        speeds and the round length."""
        return {"parameters": [p.detach().cpu() for p in self.outer.parameters],
                "outer": self.outer.state_dict(), "step": self.run.step,
                "speeds": list(self.speeds), "round_steps": self.round_steps}

    def load_outer_state(self, state: dict[str, Any]) -> None:
        """``outer_state``'s, taken: the parameters, then the anchor from them."""
        with torch.no_grad():
            for mine, sent in zip(self.outer.parameters, state["parameters"], strict=True):
                mine.copy_(sent)
        self.outer.load_state_dict(state["outer"], self.device)
        self.run.step, self.speeds = state["step"], list(state["speeds"])
        self.round_steps = state["round_steps"]


def member_islands(membership: Membership) -> tuple[tuple[int, ...], ...]:
    """The islands of a live-membership generation: the ranks of each host."""
    return islands_of(list(membership.generation.hosts))
