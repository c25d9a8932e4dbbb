"""Each rank's share of every global step, for a user's script: which indices, and how many.

The global batch's sample order is corral's own
(``trainer.step.batch_order.GlobalBatchOrder``: one seeded permutation per epoch, step ``s``
takes the next B positions); the split of each step into per-rank shares comes from
``ShareSchedule``, whose rank 0 runs corral's ``Balancer``. A new split is agreed at the end of
a step (one broadcast) and applies ``lead`` steps later, because a data loader draws its next
batches before the current step ends: no rank has drawn a step's indices when its split is
decided, so every rank cuts every step the same way.

Two samplers read the schedule: ``GlobalStepSampler`` yields, per step, one index list per rank
and accumulation round (for accelerate's ``BatchSamplerShard``, which hands rank r every r-th
list: the Hugging Face Trainer), and ``RankStepSampler`` yields only this rank's list per step
(for ``DataLoader(batch_sampler=...)`` in a plain DDP script).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from profiles.user_errors import UsageError
from trainer.balance.balancer import Balancer
from trainer.balance.config import BalancerConfig, Decision
from trainer.balance.solve import equal_split, proportional_split
from trainer.integrations.contract import SPLIT_ENV, ScriptSettings
from trainer.step.batch_order import GlobalBatchOrder


@dataclass(frozen=True)
class Scheduled:
    """A balancer decision on the script path, and the first step whose shares it sets (the
    data loader has already drawn the steps before it)."""

    first_step: int
    decision: Decision


class ShareSchedule:
    """The split of every step (1-based), the same on every rank; rank 0 owns the balancer."""

    def __init__(self, settings: ScriptSettings, *, global_batch: int, world: int, rank: int,
                 lead: int = 2, min_share: int = 1, batch_source: str = "") -> None:
        self.settings, self.world, self.rank, self.lead = settings, world, rank, lead
        self.global_batch, self.min_share = global_batch, min_share
        first = equal_split(global_batch, world)
        if settings.split is not None and _fits(settings.split, world, global_batch, min_share):
            first = settings.split
        elif settings.split is not None and rank == 0:
            # [run] split is written for corral's own tasks too (the embedded cluster.toml's):
            # one that does not fit the script's batch is a warning, not a failed run.
            print(f"corral: {SPLIT_ENV}={_csv(settings.split)} does not fit the script: it "
                  f"needs {world} shares of at least {min_share} adding up to its global batch "
                  f"{global_batch}{f' ({batch_source})' if batch_source else ''}; the shares "
                  "start equal ([run] split applies to a script whose batch it fits)",
                  file=sys.stderr, flush=True)
        if not _fits(first, world, global_batch, min_share):
            raise UsageError(
                f"the script's global batch {global_batch}"
                f"{f' ({batch_source})' if batch_source else ''} cannot give {world} shares "
                f"of at least {min_share}; raise the batch")
        self._changes: list[tuple[int, tuple[int, ...]]] = [(1, tuple(first))]
        self._drawn = 0  # the highest step any sampler on this rank has cut
        self.last_step = 0
        """The run's last step once known (``ScriptRun.start``; 0: unknown): no split is
        decided for a step after it (a 20-step run once listed a decision for step 22)."""
        self.balancer = (Balancer(BalancerConfig(
            policy=settings.policy, global_batch=global_batch, world_size=world,
            rebalance_every=settings.rebalance_every, min_batch=min_share), tuple(first))
            if rank == 0 else None)

    @property
    def drawn(self) -> int:
        """The highest step whose indices a sampler on this rank has cut (0: none yet)."""
        return self._drawn

    def split_at(self, step: int) -> tuple[int, ...]:
        """The shares of step ``step``; marks the step as drawn."""
        self._drawn = max(self._drawn, step)
        return next(split for first, split in reversed(self._changes) if first <= step)

    def decide(self, step: int, shares: tuple[int, ...], compute_s: list[float],
               observed: tuple[int, ...] | None = None) -> Scheduled | None:
        """Rank 0 only: record the ranks' times (``observed``: the share each time is of,
        when not ``shares``, step ``step``'s); maybe a new split, and the step it takes effect
        from. Every rank then calls ``apply``."""
        balancer = self.balancer
        assert balancer is not None
        balancer.observe(observed or shares, compute_s)
        if self.settings.policy == "static" or step % self.settings.rebalance_every:
            return None
        if self.last_step and step + self.lead > self.last_step:
            return None  # no step of this run would train with it
        if self.settings.policy == "proportional":
            if step != self.settings.rebalance_every:  # proportional: set once, then kept
                return None
            rates = balancer.capacities()
            if any(r is None for r in rates):
                return None
            new = proportional_split([float(r or 0) for r in rates], self.global_batch)
            return Scheduled(step + self.lead, Decision(
                previous=shares, split=new, reason=f"capacities measured over {step} steps",
                predicted_gain=0.0, times=tuple(compute_s)))
        decision = balancer.decide(step)
        return Scheduled(step + self.lead, decision) if decision is not None else None

    def apply(self, first_step: int, split: tuple[int, ...]) -> None:
        """Use ``split`` from ``first_step`` on (every rank, with the same arguments)."""
        if first_step <= self._drawn:
            raise RuntimeError(f"step {first_step}'s indices were already drawn: the data "
                               f"loader reads further ahead than corral's lead of {self.lead}")
        if split != self.split_at_quietly(first_step):
            self._changes.append((first_step, tuple(split)))

    def for_generation(self, world: int, rank: int, split: tuple[int, ...],
                       from_step: int) -> ShareSchedule:
        """The schedule of a new membership generation (live membership): ``world`` ranks,
        this one ``rank``, ``split`` from step ``from_step`` on (the steps before it are
        drawn); rank 0's balancer starts again from ``split``, with the run's least share
        (the HF opt-in's: a sample per accumulation round, or a round gets an empty batch)."""
        fresh = ShareSchedule(replace(self.settings, split=tuple(split)),
                              global_batch=self.global_batch, world=world, rank=rank,
                              lead=self.lead, min_share=self.min_share)
        fresh._drawn, fresh.last_step = from_step - 1, self.last_step
        return fresh

    def split_at_quietly(self, step: int) -> tuple[int, ...]:
        """The shares of step ``step`` as planned now (does not mark it drawn)."""
        return next(split for first, split in reversed(self._changes) if first <= step)


class GlobalStepSampler:
    """Per step, ``rounds`` accumulation rounds of one index list per rank: a batch sampler
    for accelerate's ``BatchSamplerShard`` (rank r takes every r-th list)."""

    batch_size = None  # lists differ in size: BatchSamplerShard must not assume one
    drop_last = True

    def __init__(self, order: GlobalBatchOrder, schedule: ShareSchedule, rounds: int = 1
                 ) -> None:
        self.order, self.schedule, self.rounds = order, schedule, rounds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.order.steps_per_epoch * self.rounds * self.schedule.world

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        first = epoch * self.order.steps_per_epoch + 1
        for step in range(first, first + self.order.steps_per_epoch):
            split = self.schedule.split_at(step)
            pieces = [self._pieces(self.order.local_indices(step, split, r).tolist())
                      for r in range(len(split))]
            for round_ in range(self.rounds):
                for rank_pieces in pieces:
                    yield rank_pieces[round_]

    def _pieces(self, indices: list[int]) -> list[list[int]]:
        """A rank's share cut into ``rounds`` near-equal consecutive pieces."""
        size, extra = divmod(len(indices), self.rounds)
        cuts = [0]
        for round_ in range(self.rounds):
            cuts.append(cuts[-1] + size + (1 if round_ < extra else 0))
        return [indices[a:b] for a, b in itertools.pairwise(cuts)]


class RankStepSampler:
    """This rank's index list of each step: ``DataLoader(dataset, batch_sampler=...)``."""

    def __init__(self, order: GlobalBatchOrder, schedule: ShareSchedule,
                 on_step: Callable[[int], None] | None = None) -> None:
        self.order, self.schedule, self.on_step = order, schedule, on_step
        self.epoch = 0
        """The 0-based epoch the next pass draws (its order, its steps)."""
        self._ordinals: dict[int, int] = {}
        self.resume_at = 1
        """The first step this rank draws: a joiner's, the step after the one it was let in
        at (the passes and steps before it yield nothing)."""
        self.ended = False
        """This rank's host left the run: no pass yields anything more."""

    def set_epoch(self, epoch: int) -> None:
        """The next pass is the epoch the script numbers ``epoch``, whatever its numbering:
        the n-th number given is the n-th epoch (``set_epoch(1)`` for the first, as scripts
        counting from 1 do), and a number given again is that epoch again (its order)."""
        self.epoch = self._ordinals.setdefault(epoch, len(self._ordinals))

    def __len__(self) -> int:
        return self.order.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        first = epoch * self.order.steps_per_epoch + 1
        end = first + self.order.steps_per_epoch
        for step in range(first, end):
            if self.ended or step < self.resume_at:
                continue
            if self.on_step is not None:  # the loop asks for step s: step s - 1 is done
                self.on_step(step)  # (with live membership: a change, then this rank's place)
            if self.ended or step < self.resume_at:
                continue
            split = self.schedule.split_at(step)
            yield self.order.local_indices(step, split, self.schedule.rank).tolist()
        if self.on_step is not None and not self.ended and end > self.resume_at:
            self.on_step(end)


def _fits(split: tuple[int, ...], world: int, global_batch: int, min_share: int) -> bool:
    return len(split) == world and sum(split) == global_batch and min(split) >= min_share


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))
