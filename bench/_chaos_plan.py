"""The chaos run's fault schedule (bench/chaos.py): a pure function of a seed, so that a run
that broke an invariant can be told again fault by fault, and the schedule tested without
starting anything.

A schedule is a sequence of faults, each injected a few steps (``after_steps``, drawn from the
seed) after the previous one's invariants held. Which faults may come next depends on which
hosts the schedule expects in the run: a fault that takes a worker out (its rank SIGKILLed, its
launcher killed, its link DROPped, a planned leave) needs one in the run; a join needs one out;
the others (the disk filled, the follower killed and re-attached, a stop and ``--resume``) may
come at any time. The master's host is never taken out: its rank serves the run's store, and
``corral leave`` refuses it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

OUT_KINDS = ("kill_rank", "kill_launcher", "drop_link", "leave")
"""Faults that take one worker out of the run (the survivors go on without it)."""
ANY_TIME_KINDS = ("fill_disk", "kill_follower", "stop_resume")
"""Faults that need no particular membership."""
KINDS = (*OUT_KINDS, "join", *ANY_TIME_KINDS)
"""Every kind of fault, in the order reports list them."""
GAP_STEPS = (2, 6)
"""The fewest and most steps between one fault's invariants holding and the next fault."""


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: what, on which host (None: the run as a whole), and after how
    many of the run's steps past the previous fault's settling."""

    index: int
    kind: str
    host: str | None
    after_steps: int

    def label(self) -> str:
        """``#3 drop_link n3`` (for progress lines and reports)."""
        return f"#{self.index} {self.kind}" + (f" {self.host}" if self.host else "")


def _allowed(kinds: Sequence[str], inside: set[str], outside: set[str]) -> list[str]:
    return [kind for kind in kinds
            if (kind in OUT_KINDS and inside) or (kind == "join" and outside)
            or kind in ANY_TIME_KINDS]


def schedule(seed: int, faults: int, workers: Sequence[str] = ("n2", "n3"),
             kinds: Sequence[str] = KINDS) -> list[Fault]:
    """``faults`` faults drawn from ``seed`` for a run that starts with every host of
    ``workers`` in it (besides the master's). Each kind of ``kinds`` is drawn with equal
    weight among those the expected membership allows; a stop and ``--resume`` brings every
    worker back (the resumed run is launched on cluster.toml's hosts).

    Raises ValueError for a negative count, an unknown kind, or kinds that leave nothing
    allowed (only ``join`` with every worker in)."""
    if faults < 0:
        raise ValueError(f"faults must be >= 0, not {faults}")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    inside, outside = set(workers), set[str]()
    plan: list[Fault] = []
    for index in range(1, faults + 1):
        allowed = _allowed(kinds, inside, outside)
        if not allowed:
            raise ValueError(f"fault {index}: none of {list(kinds)} is possible with "
                             f"{sorted(inside)} in the run")
        kind = rng.choice(allowed)
        host = None
        if kind in OUT_KINDS:
            host = rng.choice(sorted(inside))
            inside.remove(host)
            outside.add(host)
        elif kind == "join":
            host = rng.choice(sorted(outside))
            outside.remove(host)
            inside.add(host)
        elif kind == "stop_resume":
            inside, outside = set(workers), set()
        plan.append(Fault(index, kind, host, rng.randint(*GAP_STEPS)))
    return plan


def counts(plan: Sequence[Fault]) -> dict[str, int]:
    """Faults per kind, every kind of ``KINDS`` listed (0 where none)."""
    return kind_counts(fault.kind for fault in plan)


def kind_counts(kinds: Iterable[str]) -> dict[str, int]:
    """How often each kind of ``KINDS`` is in ``kinds`` (0 where never)."""
    listed = list(kinds)
    return {kind: listed.count(kind) for kind in KINDS}


def moot(fault: Fault, members: Collection[str]) -> bool:
    """Whether ``fault`` cannot be made on a run whose hosts are ``members``: a run that ended
    by itself (a full disk) was resumed on every host, which the schedule did not foresee, so
    the host it takes out is out already, or the one it brings back is in."""
    if fault.kind == "join":
        return fault.host in members
    return fault.kind in OUT_KINDS and fault.host not in members
