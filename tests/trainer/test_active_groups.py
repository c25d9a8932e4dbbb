"""The process groups of active sets: by what their members can use, made where the policy
decides, their making timed, at most ``MAX_GROUPS`` kept (the oldest destroyed), none for a set
of one rank."""

from __future__ import annotations

import torch.distributed as dist

from trainer.step.exchange import group_backend


def test_an_all_cuda_set_gets_nccl_and_a_set_with_a_cpu_rank_the_world_s() -> None:
    cuda_ranks = (True, True, False)
    expected = "nccl" if dist.is_nccl_available() else "gloo"
    assert group_backend((0, 1), cuda_ranks, "gloo") == expected
    assert group_backend((0, 2), cuda_ranks, "gloo") == "gloo"  # a CPU rank is active
    assert group_backend((1, 2), cuda_ranks, "gloo") == "gloo"
