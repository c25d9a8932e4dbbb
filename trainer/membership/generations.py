"""The generations driver: a membership change's skeleton, held once for every loop.

A loop (the exact loop, the low-communication loop) hands its collectives to the driver and
implements only what is its own (``GenerationLoop``): take its place in a new generation and
re-form its parts on the new group, give its training state, load one. The driver does the
rest, the same for every loop (the shape of torchft's ``Manager``: the loop as written, the
group and the state behind callbacks):

- a loss (a collective failed): is it a lost member's doing (else the error is this rank's own
  and raised) → the survivors' plan from rank 0 → this rank leaves (not in the plan) or the
  generation re-forms in this process → the training state where needed → if a member is lost
  while it forms, the same again from the plan on, without whoever was lost;
- a step (or a round's) boundary: the change its tallies ask for (a leave, a join), the same
  way;
- a joiner: the state of the generation that admitted it.

``FixedGroup`` is the run without live membership (no ``CORRAL_MEMBERSHIP_PORT``): every
method does the plain thing, so a loop has no branch of its own for it. ``generations_for``
gives the one or the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from trainer.checkpoint.files import rng_state, set_rng_state
from trainer.event_log import EventWriter
from trainer.membership.members import BoundaryFlags, Membership
from trainer.membership.plan import Generation, NextGeneration
from trainer.membership.state import broadcast_state
from trainer.step.step_records import RunProgress

T = TypeVar("T")


class GenerationLoop(Protocol):
    """What a loop implements for the driver: only what is its own."""

    @property
    def split(self) -> Sequence[int]:
        """Each rank's share of the global batch now (the plan after a loss starts from it)."""

    def take_place(self, plan: NextGeneration, rank: int) -> None:
        """Before ``plan``'s group forms (no collective): this rank's place (``rank``) in it
        and every setting that depends on it (``plan.kept``: each new rank's rank before, None
        for a joiner), the old group's parts let go. A forming that fails is retried from
        here, so every attempt's place is the one the next plan is made from."""

    def reform(self) -> None:
        """Once the new group formed: the parts made on it (collective)."""

    def training_state(self) -> dict[str, Any]:
        """What another rank needs to go on as this one (sent by ``plan.state_from``)."""

    def load_training_state(self, state: dict[str, Any]) -> None:
        """``training_state``'s, taken from another rank."""


def _stays(_: NextGeneration) -> bool:
    """What a loss's survivor does after the new generation formed: nothing more."""
    return True


class Generations:
    """A run with live membership: this rank's generations, changed at boundaries and after
    losses (``membership``: its store and its generation; ``run``: ``left`` set when this
    rank's host is out)."""

    def __init__(self, membership: Membership, loop: GenerationLoop, events: EventWriter,
                 run: RunProgress, *, backend: str, device: torch.device, global_batch: int,
                 abort_on_loss: bool) -> None:
        """``abort_on_loss``: end the generation's groups where a loss is seen, so every peer
        still in one of its collectives fails at once (the exact loop: a step's collectives
        that never reach the lost member would otherwise wait for the watch)."""
        self.membership, self.loop, self.events, self.run = membership, loop, events, run
        self.backend, self.device, self.global_batch = backend, device, global_batch
        self.abort_on_loss = abort_on_loss

    live = True
    """Whether the group can change (``FixedGroup``: False)."""
    before_change: Callable[[], None] | None = None
    """Called on every member of the old group, the leaver too, when a boundary decides a
    change, while that group still stands (sharded state: the slices gathered)."""
    after_change: Callable[[], None] | None = None
    """Called on every member of a new generation once its training state was sent and loaded
    (sharded state: the whole state let go)."""

    @property
    def generation(self) -> Generation | None:
        return self.membership.generation

    @property
    def joining(self) -> NextGeneration | None:
        """A joiner, until it has the state: the generation that admitted it."""
        return self.membership.joining

    @property
    def flags(self) -> Callable[[], tuple[float, float]] | None:
        """What each step's tally carries for the boundary (``Membership.flags``)."""
        return self.membership.flags

    @property
    def make_group(self) -> Callable[[list[int], str], object] | None:
        """An active set's group, bounded when a member is lost while it forms."""
        return self.membership.make_group

    def arm(self) -> None:
        """From this rank's first step on, a member that goes silent is lost."""
        self.membership.arm()

    def admitted(self) -> None:
        """A joiner, once its parts are made: the state of the generation that admitted it."""
        if self.membership.joining is not None:
            self._take_state(self.membership.joining, time.monotonic())

    def keep_written(self, policy: str, split: Sequence[int]) -> None:
        """A static split at the launch: each host's written share, given back to a host that
        leaves and joins again (``written_split``); a joiner's split is no launch's."""
        membership = self.membership
        if policy == "static" and membership.joining is None:
            membership.written = tuple(zip(membership.generation.hosts, split, strict=True))

    # -- the skeleton -------------------------------------------------------------------------
    def step(self, work: Callable[[], T], step: int) -> T | None:
        """``work()`` (the loop's step ``step``); None when a member was lost during it: if
        the step did not complete here (``run.step`` still before it), the RNG is as before it
        and the survivors' next generation redoes it (``run.left``: this rank is out)."""
        rng = rng_state()
        try:
            return work()
        except RuntimeError as exc:  # gloo: "connection closed" by a dead peer or an abort
            in_step = self.run.step < step
            if in_step:
                set_rng_state(rng)
            self.survive(exc, lambda: self.run.step, _stays, in_step=in_step)
            return None

    def guarded(self, work: Callable[[], None]) -> bool:
        """``work()`` after a completed step or round (evaluation, rebalance, checkpoint);
        False when a member was lost during one of its collectives and this rank is out (the
        completed step stands; the survivors go on without what was left undone)."""
        try:
            work()
        except RuntimeError as exc:
            return self.survive(exc, lambda: self.run.step, _stays) is not None
        return True

    def boundary(self, tallies: Sequence[BoundaryFlags]) -> bool:
        """After a completed step or round: the last change's event, then the change the
        tallies ask for (a leave, a join), if any. False when this rank's host leaves (or was
        cut off meanwhile)."""
        membership, seen = self.membership, time.monotonic()
        membership.report(self.events)  # the last change's event, after its first step
        plan = membership.at_boundary(tallies, self.run.step, self.loop.split,
                                      self.global_batch, self.events)
        if plan is None:
            return True
        try:
            if self.before_change is not None:
                self.before_change()
            if membership.member not in plan.generation.members:
                self._leave()
                return False
            self._form(plan, seen)
        except RuntimeError as exc:  # a member lost while the generation formed
            membership.unfinished(plan, self.events)
            return self.survive(exc, lambda: self.run.step, _stays) is not None
        return True

    def survive(self, error: RuntimeError, completed: Callable[[], int],
                then: Callable[[NextGeneration], T], *, in_step: bool = False) -> T | None:
        """After a failed collective: the survivors' next generation (``completed()``: this
        rank's completed steps; ``in_step``: the failure interrupted the step after them),
        formed here, then ``then(plan)``; both again, from the place of the generation that
        did not form, without whoever is lost meanwhile. None when this rank is out. Raises
        ``error`` when it is no lost member's doing (this rank's own failure: it ends, and
        the others lose it) or nobody is left."""
        membership, seen = self.membership, time.monotonic()
        if self.abort_on_loss and membership.is_loss(error):
            membership.store.end_generation()
        while True:
            if not membership.is_loss(error):
                raise error
            plan = membership.after_loss(completed(), in_step, self.loop.split,
                                         self.global_batch)
            if not plan.hosts:
                raise error
            if membership.member not in plan.generation.members:
                self._leave()  # its host was cut off and is back: it is out
                return None
            try:
                self._form(plan, seen)
                return then(plan)
            except RuntimeError as again:  # another member lost while the generation formed
                membership.unfinished(plan, self.events)
                error = again

    def _form(self, plan: NextGeneration, seen: float) -> None:
        """Form ``plan``'s generation in this process: this rank's place in it first (a
        forming that fails is retried from there), then the group, the loop's parts made on
        it, the state sent where needed."""
        self.membership.generation = plan.generation
        self.events.members = plan.generation.members
        self.loop.take_place(plan, self.membership.rank)
        self.membership.form(self.backend, self.device)
        self.loop.reform()
        self._take_state(plan, seen)

    def _take_state(self, plan: NextGeneration, seen: float) -> None:
        """In the new generation: the training state from ``plan.state_from`` to every other
        rank (a joiner; a survivor a step behind)."""
        sent = 0
        if plan.state_from is not None:
            sent, state = broadcast_state(self.loop.training_state, plan.state_from,
                                          self.membership.rank, self.device)
            if state is not None:
                self.loop.load_training_state(state)
        if self.after_change is not None:
            self.after_change()
        self.membership.changed(plan, seen, sent)

    def _leave(self) -> None:
        self.membership.leave()
        self.run.left = True


class FixedGroup:
    """A run without live membership: one group from start to end. Every collective's error
    is the run's failure; there is no boundary change, no joiner, nothing in the tally."""

    live = False
    before_change: Callable[[], None] | None = None
    after_change: Callable[[], None] | None = None
    generation: Generation | None = None
    joining: NextGeneration | None = None
    flags: Callable[[], tuple[float, float]] | None = None
    make_group: Callable[[list[int], str], object] | None = None

    def arm(self) -> None:
        """Nothing to watch."""

    def admitted(self) -> None:
        """No joiner."""

    def keep_written(self, policy: str, split: Sequence[int]) -> None:
        """No host leaves or joins again."""

    def step(self, work: Callable[[], T], step: int) -> T | None:
        """``work()``: its error is the run's."""
        return work()

    def guarded(self, work: Callable[[], None]) -> bool:
        """``work()``: its error is the run's."""
        work()
        return True

    def survive(self, error: RuntimeError, completed: Callable[[], int],
                then: Callable[[NextGeneration], T], *, in_step: bool = False) -> T | None:
        """``error`` raised: no member can be lost."""
        raise error

    def boundary(self, tallies: Sequence[BoundaryFlags]) -> bool:
        """No change: the group is fixed."""
        return True


GroupDriver = Generations | FixedGroup
"""What a loop holds: the generations of a run with live membership, or its one group."""


def generations_for(membership: Membership | None, loop: GenerationLoop, events: EventWriter,
                    run: RunProgress, *, backend: str, device: torch.device, global_batch: int,
                    abort_on_loss: bool) -> GroupDriver:
    """The loop's driver: ``Generations`` with live membership, else ``FixedGroup``."""
    if membership is None:
        return FixedGroup()
    return Generations(membership, loop, events, run, backend=backend, device=device,
                       global_batch=global_batch, abort_on_loss=abort_on_loss)
