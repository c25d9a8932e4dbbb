"""The ``membership`` event: the run's hosts changed and training went on in the same
processes (``trainer.membership``, docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

LeaveCause = Literal["asked", "ranks_died", "unreachable"]
"""Why a host left: ``asked`` (``corral leave`` or the console), ``ranks_died`` (its ranks
exited or were killed), ``unreachable`` (its traffic stopped: no answer within the limit)."""

MembershipChange = Literal["joined", "left", "refused"]
"""What happened to a host at a generation: it came in, it went out, or its join was refused
(the run untouched)."""


START_PARTS = ("launcher", "setup", "warm_up")
"""A join's ``start`` cut in three, seconds on the joiner's clock: ``launcher`` (its torchrun,
from its start to its rank's), ``setup`` (the rank from its start to its warm-up: the
interpreter, torch's and corral's imports, the task's model and data), ``warm_up`` (an optimizer
made once: torch's first import of ``torch._dynamo``, trainer/step/optim.py: ``warm_up``)."""


@dataclass(frozen=True, kw_only=True)
class MembershipEvent:
    """Rank 0: the run's membership changed at a step boundary, and training went on in the
    same processes (``trainer.membership``)."""

    kind: ClassVar[str] = "membership"
    t: float
    rank: int
    generation: int
    """The membership generation that starts here (the run's launch is generation 0)."""
    step: int
    """Steps completed before the change: the next step is the first of the new generation."""
    change: MembershipChange
    hosts: tuple[str, ...]
    """The hosts (cluster.toml's names) that joined, left or were refused."""
    cause: LeaveCause | None = None
    """Why they left (``change == "left"``)."""
    reason: str | None = None
    """One line for the user: what was seen (a refused join: what to fix)."""
    said: str | None = None
    """A host lost with its ranks (``ranks_died``): what its ranks said as they ended, when
    they could say it through the run's store (their own error: ``disk full on HOST at
    PATH: …``); None otherwise."""
    redone_steps: int = 0
    """Steps the survivors ran again: the step a lost host interrupted (nothing of it applied)."""
    world_size: int
    """Ranks in the new generation."""
    members: tuple[int, ...] = ()
    """The new generation's ranks as event ranks, in its rank order: an event's ``rank`` is a
    stable member id (a launched rank keeps its launch rank; a joiner gets the next unused id),
    so ``members[r]`` is the id of generation rank ``r``."""
    state_bytes: int = 0
    """Training state sent to the joiners (parameters, optimizer, positions, RNG)."""
    seconds_to_step: float | None = None
    """From the trigger (the request, the loss seen) to the new generation's first completed
    step; None until that step (rank 0 writes the event after it)."""
    phases: dict[str, float] = field(default_factory=dict)
    """A join's cost in seconds by phase, in order: ``check``, ``push`` (``corral join``, on
    the user's machine), ``start`` (the joiner's torchrun to its announcement), its parts
    (``START_PARTS``) where the joiner measured them, ``admission`` (rank 0 seeing it to the
    new generation's first step); empty otherwise (``trainer.membership.join_cost``)."""

    def phases_text(self) -> str:
        """``check 1.2 s, push 0.4 s, start 3.0 s (launcher 1.1 s, setup 1.0 s, warm_up
        0.9 s), admission 0.8 s`` ('' when none): the parts of ``start`` in brackets."""
        parts = ", ".join(f"{name} {self.phases[name]:.1f} s" for name in START_PARTS
                          if name in self.phases)
        return ", ".join(f"{name} {seconds:.1f} s" + (f" ({parts})" if name == "start" and parts
                                                      else "")
                         for name, seconds in self.phases.items() if name not in START_PARTS)

    def host_detail(self) -> str:
        """How a host's status says this change: ``left at step N (why)`` (and ``: what its
        ranks said`` when they said it), ``joined at step N`` or ``join refused: why`` (N: the
        steps done before it)."""
        if self.change == "left":
            said = f": {self.said}" if self.said else ""
            return f"left at step {self.step} ({self.cause or 'asked'}){said}"
        if self.change == "joined":
            return f"joined at step {self.step}"
        return f"join refused: {self.reason or 'no reason given'}"
