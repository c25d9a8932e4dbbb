"""The exact global-batch order: which sample indices each rank uses at each step.

Every rank holds the whole training set and computes the same sample order: one seeded
permutation per epoch. The ``s``-th step of an epoch (counting from 0) consumes positions
``[s*B, (s+1)*B)`` of it, and rank ``r`` takes the slice between the prefix sums of the current
split, so the ranks together see exactly those B samples whatever the split is. Steps are
numbered from 1 everywhere (the first step is step 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from profiles.user_errors import UsageError


class GlobalBatchOrder:
    """Which sample indices each rank uses at each step: exact global batches of size B."""

    def __init__(self, num_samples: int, global_batch: int, seed: int,
                 item_tokens: Sequence[int] | None = None) -> None:
        if num_samples < global_batch:
            raise UsageError(
                f"the dataset has {num_samples} samples, fewer than --global-batch {global_batch}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.seed = seed
        self.item_tokens = torch.tensor(item_tokens) if item_tokens is not None else None
        """Each item's compute in tokens; given: a split shares each step's tokens (below)."""
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
        is read as each rank's share of the step's *tokens*: every boundary is the item
        boundary nearest to its token target, so the ranks still take consecutive slices of
        the same items in the same order (any cut gives the same exact gradient)."""
        bounds = [0]
        for share in split:
            bounds.append(bounds[-1] + share)
        if self.item_tokens is None:
            return bounds
        cumulative = torch.cat([torch.zeros(1, dtype=torch.long),
                                self.item_tokens[self.global_indices(step)].cumsum(0)])
        total = float(cumulative[-1])
        cut = [0]
        for bound in bounds[1:-1]:
            target = total * bound / self.global_batch
            nearest = int((cumulative.double() - target).abs().argmin())
            cut.append(max(nearest, cut[-1]))
        return [*cut, self.global_batch]

    def counts(self, step: int, split: Sequence[int]) -> list[int]:
        """Each rank's number of items at step ``step`` (its share, unless tokens are
        shared)."""
        cut = self.cuts(step, split)
        return [b - a for a, b in pairwise(cut)]

    def rank_tokens(self, step: int, split: Sequence[int]) -> list[int]:
        """Each rank's tokens at step ``step`` (``item_tokens`` required)."""
        assert self.item_tokens is not None
        sizes = self.item_tokens[self.global_indices(step)]
        cut = self.cuts(step, split)
        return [int(sizes[a:b].sum()) for a, b in pairwise(cut)]

    def local_indices(self, step: int, split: Sequence[int], rank: int) -> torch.Tensor:
        """Rank ``rank``'s sample indices for step ``step`` (1-based)."""
        cut = self.cuts(step, split)
        return self.global_indices(step)[cut[rank]:cut[rank + 1]]


def token_shares(tokens: Sequence[int], global_batch: int) -> list[int]:
    """Each rank's tokens as its part of ``global_batch`` (the unit the split is in)."""
    total = max(sum(tokens), 1)
    return [round(t * global_batch / total) for t in tokens]
