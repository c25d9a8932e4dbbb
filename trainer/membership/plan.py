"""What a change of membership decides, as pure functions and records (no process group, no
store, no clock): who is in the next generation, each rank's share of the global batch, and
what each per-rank setting becomes.

A generation's ranks are numbered 0..n-1 in the order of its ``members``: the stable member ids
(a launched rank keeps its launch rank, a joiner gets the next unused id). Rank 0 — the
master's host, which cannot leave — writes the ``NextGeneration`` to the membership store and
every rank of the next generation reads the same one (trainer/membership/members.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar

from trainer.events import LeaveCause, MembershipChange
from trainer.settings.train_config import TrainConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Generation:
    """One membership generation: its process group's ranks, in rank order."""

    number: int
    """0 for the run's launch, +1 at each change."""
    members: tuple[int, ...]
    """The member id of each rank of the generation (``members[r]``: rank r's id)."""
    hosts: tuple[str, ...]
    """The host (cluster.toml's name) of each rank of the generation."""

    def ranks_of(self, hosts: Sequence[str]) -> tuple[int, ...]:
        """This generation's ranks on ``hosts``."""
        return tuple(r for r, h in enumerate(self.hosts) if h in hosts)


@dataclass(frozen=True)
class NextGeneration:
    """A change at a step boundary, as rank 0 decided it: every rank of the generation after
    it (and every leaver) acts on the same record."""

    generation: Generation
    """The generation that starts at ``step + 1``."""
    step: int
    """Steps completed before the change (the next generation's first step is ``step + 1``)."""
    split: tuple[int, ...]
    """Each new rank's share of the global batch for its first step."""
    kept: tuple[int | None, ...]
    """For each new rank, its rank in the generation before (None: a joiner)."""
    change: MembershipChange
    hosts: tuple[str, ...]
    """The hosts that joined or left."""
    cause: LeaveCause | None = None
    redone_steps: int = 0
    """Steps the survivors run again (an unplanned loss interrupts one)."""
    reason: str | None = None
    """How a lost host was found gone (its processes' connections closed, or its heartbeat
    went still), for the event."""
    state_from: int | None = None
    """The new rank that sends the training state to every other one (a joiner's, or after a
    loss that some survivors saw one step later than others); None: nobody needs it."""
    phases: dict[str, float] = field(default_factory=dict)
    """A join: the joiner's phases so far (``trainer.membership.join_cost``)."""
    said: str | None = None
    """A loss: what the lost ranks said as they ended (their own error, such as a full disk),
    posted to the store because nothing they write on their host may reach the user."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NextGeneration:
        raw = json.loads(text)
        gen = raw["generation"]
        return cls(generation=Generation(gen["number"], tuple(gen["members"]),
                                         tuple(gen["hosts"])),
                   step=raw["step"], split=tuple(raw["split"]), kept=tuple(raw["kept"]),
                   change=raw["change"], hosts=tuple(raw["hosts"]), cause=raw["cause"],
                   redone_steps=raw["redone_steps"], reason=raw.get("reason"),
                   state_from=raw["state_from"], phases=raw.get("phases", {}),
                   said=raw.get("said"))


def resplit(split: Sequence[int], kept: Sequence[int | None], global_batch: int,
            joiner_share: int = 0) -> tuple[int, ...]:
    """The new generation's shares: each kept rank keeps its share, a joiner starts with
    ``joiner_share`` (taken from the largest shares), and the leavers' shares go to the kept
    ranks in proportion to what they hold (largest remainder; every sample of the global
    batch has one rank)."""
    own = [split[k] if k is not None else 0 for k in kept]
    joiners = [i for i, k in enumerate(kept) if k is None]
    for i in joiners:  # a joiner's first share, taken one sample at a time from the largest
        for _ in range(joiner_share):
            largest = max(range(len(own)), key=lambda j: own[j])
            if own[largest] <= 1:
                break
            own[largest] -= 1
            own[i] += 1
    spare = global_batch - sum(own)
    if spare <= 0:
        return tuple(own)
    weights = [o if kept[i] is not None else 0 for i, o in enumerate(own)]
    if sum(weights) == 0:  # only benched or new ranks are left: share evenly
        weights = [1] * len(own)
    total = sum(weights)
    exact = [spare * w / total for w in weights]
    extra = [int(e) for e in exact]
    by_remainder = sorted(range(len(own)), key=lambda j: exact[j] - extra[j], reverse=True)
    for j in by_remainder[:spare - sum(extra)]:
        extra[j] += 1
    return tuple(o + e for o, e in zip(own, extra, strict=True))


def written_split(written: Sequence[tuple[str, int]] | None, hosts: Sequence[str],
                  global_batch: int, fallback: tuple[int, ...]) -> tuple[int, ...]:
    """A static split's shares for a generation whose ranks are on ``hosts`` (rank order):
    each rank the share written for the same rank of its host at launch (``written``: the
    launch's (host, share) by launch rank), the shares of the hosts away spread over the others
    in proportion to theirs (largest remainder): all hosts back, the written split exactly.
    ``fallback`` when a rank has no written share (its host was not launched with the run)
    or the split is not static (``written`` None)."""
    if written is None:
        return fallback
    by_host: dict[str, list[int]] = {}
    for host, share in written:
        by_host.setdefault(host, []).append(share)
    taken: dict[str, int] = {}
    shares = []
    for host in hosts:
        index = taken[host] = taken.get(host, -1) + 1
        if index >= len(by_host.get(host, ())):
            return fallback
        shares.append(by_host[host][index])
    return resplit(shares, range(len(shares)), global_batch)


def remap_ranks(values: Sequence[T], kept: Sequence[int | None], fresh: T) -> tuple[T, ...]:
    """A per-rank list for the new generation: a kept rank's own value, ``fresh`` for a
    joiner."""
    return tuple(values[k] if k is not None else fresh for k in kept)


def config_for(config: TrainConfig, kept: Sequence[int | None],
               split: tuple[int, ...]) -> TrainConfig:
    """``config`` with every per-rank setting renumbered for the new generation (a joiner:
    no cap, one pass per share, no emulated slowdown) and the new split."""
    changes: dict[str, object] = {"split": split, "slowdown_at": ()}
    if config.max_batch is not None:
        changes["max_batch"] = remap_ranks(config.max_batch, kept, None)
    if config.micro_batch is not None and len(config.micro_batch) > 1:
        changes["micro_batch"] = remap_ranks(config.micro_batch, kept, None)
    if len(config.slowdown) > 1:
        changes["slowdown"] = remap_ranks(config.slowdown, kept, 1.0)
    return replace(config, **changes)  # type: ignore[arg-type]


def balancer_state_for(state: dict[str, object], kept: Sequence[int | None],
                       split: tuple[int, ...], fresh_rank: dict[str, object]) -> dict[str, object]:
    """Rank 0's balancer state carried into the new generation: each kept rank keeps what was
    measured of it, a joiner starts with nothing measured (``fresh_rank``), the split is the
    new one, and the exchange's measurements (per set of active ranks) start again, and so do
    the decision judge's (``trainer/balance/verdict.py``: step times per split of the ranks
    before; returning to one of those splits would give the new group a split of another
    length, or one whose places are other hosts')."""
    ranks = state["ranks"]
    assert isinstance(ranks, list)  # one entry per rank of the generation before
    return {**state, "split": list(split), "last_move": None, "exchange": None,
            "verdict": None, "ranks": list(remap_ranks(ranks, kept, fresh_rank))}
