"""The exact global-batch order: which sample indices each rank uses at each step.

Every rank holds the whole training set and computes the same sample order: one seeded
permutation per epoch. The ``s``-th step of an epoch (counting from 0) consumes positions
``[s*B, (s+1)*B)`` of it, and rank ``r`` takes the slice between the prefix sums of the current
split, so the ranks together see exactly those B samples whatever the split is. Steps are
numbered from 1 everywhere (the first step is step 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch

from profiles.user_errors import UsageError


class GlobalBatchOrder:
    """Which sample indices each rank uses at each step: exact global batches of size B."""

    def __init__(self, num_samples: int, global_batch: int, seed: int,
                 item_tokens: Sequence[int] | None = None, padded: bool = False) -> None:
        if num_samples < global_batch:
            raise UsageError(
                f"the dataset has {num_samples} samples, fewer than --global-batch {global_batch}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.seed = seed
        self.item_tokens = torch.tensor(item_tokens) if item_tokens is not None else None
        """Each item's compute in tokens; given: a split shares each step's tokens (below)."""
        self.padded = padded
        """A rank's items are padded to the longest of them: a slice's compute is its items
        times its longest item's tokens, not their sum."""
        self._cuts: tuple[int, tuple[int, ...], list[int]] | None = None
        # The last partial batch of an epoch is dropped so every step has exactly B samples.
        self.steps_per_epoch = num_samples // global_batch
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``: a function of (seed, epoch) only."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_samples, generator=g)
            self._epoch = epoch
        return self._perm

    def epoch_of(self, step: int) -> int:
        """Epoch (0-based) whose samples step ``step`` (1-based: the first step is 1) uses."""
        return (step - 1) // self.steps_per_epoch

    def global_indices(self, step: int) -> torch.Tensor:
        """Step ``step``'s (1-based) global batch, in order."""
        epoch, pos = divmod(step - 1, self.steps_per_epoch)
        return self.permutation(epoch)[pos * self.global_batch:(pos + 1) * self.global_batch]

    def cuts(self, step: int, split: Sequence[int]) -> list[int]:
        """Where each rank's slice of the global batch starts and ends (``len(split) + 1``
        positions). By count, rank r takes ``split[r]`` items. With ``item_tokens`` the split
        is read as each rank's share of the step's compute in *tokens*: the cuts make the
        largest compute per unit of share the least they can be (``min_max_cuts``), so the
        ranks still take consecutive slices of the same items in the same order (any cut gives
        the same exact gradient)."""
        if self.item_tokens is None:
            bounds = [0]
            for share in split:
                bounds.append(bounds[-1] + share)
            return bounds
        key = (step, tuple(split))
        if self._cuts is None or self._cuts[:2] != key:  # asked for by every rank and event
            sizes = self.item_tokens[self.global_indices(step)].tolist()
            self._cuts = (*key, min_max_cuts(sizes, split, self.padded))
        return list(self._cuts[2])

    def counts(self, step: int, split: Sequence[int]) -> list[int]:
        """Each rank's number of items at step ``step`` (its share, unless tokens are
        shared)."""
        cut = self.cuts(step, split)
        return [b - a for a, b in pairwise(cut)]

    def rank_tokens(self, step: int, split: Sequence[int]) -> list[int]:
        """Each rank's compute in tokens at step ``step``, padding included where items are
        padded (``item_tokens`` required)."""
        assert self.item_tokens is not None
        sizes = self.item_tokens[self.global_indices(step)].tolist()
        cut = self.cuts(step, split)
        return [slice_tokens(sizes[a:b], self.padded) for a, b in pairwise(cut)]

    def local_indices(self, step: int, split: Sequence[int], rank: int) -> torch.Tensor:
        """Rank ``rank``'s sample indices for step ``step`` (1-based)."""
        cut = self.cuts(step, split)
        return self.global_indices(step)[cut[rank]:cut[rank + 1]]


def slice_tokens(sizes: Sequence[int], padded: bool) -> int:
    """The compute of one rank's items in tokens: their sum, or padded to the longest, their
    number times the longest."""
    if not sizes:
        return 0
    return len(sizes) * max(sizes) if padded else sum(sizes)


def min_max_cuts(sizes: Sequence[int], split: Sequence[int], padded: bool) -> list[int]:
    """Cut ``sizes`` (items' tokens, in order) into consecutive slices, one per share of
    ``split``, so that the largest ``slice_tokens / share`` is least: the slowest rank's time
    when each rank's speed is its share. A bisection on that ratio, where each rank in turn
    takes every item that still fits under it (a share of 0 takes none)."""

    def fill(limit: float) -> list[int]:
        cut, pos = [0], 0
        for share in split:
            start, total, longest = pos, 0, 0
            while pos < len(sizes):
                longest, total = max(longest, sizes[pos]), total + sizes[pos]
                cost = (pos + 1 - start) * longest if padded else total
                if cost > limit * share:
                    break
                pos += 1
            cut.append(pos)
        return cut

    low, high = 0.0, slice_tokens(sizes, padded) / max(min((s for s in split if s > 0),
                                                             default=1), 1)
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if fill(middle)[-1] == len(sizes) else (middle, high)
    return fill(high)


def share_seconds(seconds: Sequence[float], tokens: Sequence[int],
                  split: Sequence[int]) -> list[float]:
    """Each rank's compute seconds for exactly its share of the step's tokens: its measured
    seconds scaled by its share's tokens over the tokens it got. The cuts land on item
    boundaries, so a rank's tokens wander around its share from step to step (by an item or
    two of a few); the balancer fits time per share, and the wandering would read as noise.
    NaN (left out) for a rank that got no tokens for a share."""
    total, global_batch = sum(tokens), sum(split)
    return [t * (total * share / global_batch) / got if got else (t if not share else math.nan)
            for t, got, share in zip(seconds, tokens, split, strict=True)]
