"""The exact global-batch order: which sample indices each rank uses at each step.

Every rank holds the whole training set and computes the same sample order: one seeded
permutation per epoch. The ``s``-th step of an epoch (counting from 0) consumes positions
``[s*B, (s+1)*B)`` of it, and rank ``r`` takes the slice between the prefix sums of the current
split, so the ranks together see exactly those B samples whatever the split is. Steps are
numbered from 1 everywhere (the first step is step 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from profiles.user_errors import UsageError


class GlobalBatchOrder:
    """Which sample indices each rank uses at each step: exact global batches of size B."""

    def __init__(self, num_samples: int, global_batch: int, seed: int) -> None:
        if num_samples < global_batch:
            raise UsageError(
                f"the dataset has {num_samples} samples, fewer than --global-batch {global_batch}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.seed = seed
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

    def local_indices(self, step: int, split: Sequence[int], rank: int) -> torch.Tensor:
        """Rank ``rank``'s sample indices for step ``step`` (1-based)."""
        epoch, pos = divmod(step - 1, self.steps_per_epoch)
        start = pos * self.global_batch + sum(split[:rank])
        return self.permutation(epoch)[start : start + split[rank]]
