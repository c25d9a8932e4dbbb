"""Pooled memory on CPU hosts with real caps (each host's rank in a memory cgroup of its own,
bench/_memory_caps.py; root only): a model whose replicated training state exceeds the
smallest host's cap is OOM-killed replicated there, and trains to the end sharded across the
hosts, each slice sized by its host's measured room, with the parameters of one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench._memory_caps import MemoryCap, run_ranks, why_not

pytestmark = [pytest.mark.slow,  # starts rank processes
              pytest.mark.skipif(why_not() is not None, reason=str(why_not()))]

GIB = 1 << 30
WIDTH, LAYERS = 4096, 7
PARAMETER_BYTES = LAYERS * (WIDTH * WIDTH + WIDTH) * 4
"""0.44 GiB of fp32 parameters: AdamW's replicated state is 1.75 GiB (4 bytes a parameter
byte; measured peak of one such process 2.2 GiB)."""
CAPS = tuple(int(gib * GIB) for gib in (1.6, 3.2, 6.4))
"""The three hosts' memory, 1:2:4: the small one holds its sharded state (stage 2: the
parameters whole, its slice of the gradient and of AdamW's moments: about 1.4 bytes a parameter
byte) but not the replicated one."""
SPLIT = [4, 0, 12]
"""The middle host benched: two non-zero gradients sum the same in any order, so one process
summing the ranks' gradients is the exchange's arithmetic."""
STEPS = 2
RUN_S = 900.0


def _spec(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"width": WIDTH, "layers": LAYERS, "split": SPLIT, "steps": STEPS,
            "store": str(tmp_path / "store"), "reference": str(tmp_path / "reference.f32"),
            **fields}


def test_a_model_too_big_to_replicate_on_the_small_host_trains_sharded_exactly(
        tmp_path: Path) -> None:
    one = _spec(tmp_path, rank=0, world=1, shard_state="reference",
                result=str(tmp_path / "reference.json"))
    assert run_ranks([one], [None], RUN_S) == [0]
    caps = [MemoryCap(f"host{i}", cap) for i, cap in enumerate(CAPS)]
    try:
        # Replicated, the small host's rank holds the whole state: the OOM killer ends it.
        alone = _spec(tmp_path, rank=0, world=1, split=[sum(SPLIT)], shard_state="replicate",
                      result=str(tmp_path / "replicated.json"))
        assert run_ranks([alone], [caps[0]], RUN_S) == [-9]
        assert caps[0].oom_kills() == 1
        assert not (tmp_path / "replicated.json").exists()
        # Sharded (stage 2) across the three hosts, each budget measured in its cgroup.
        ranks = [_spec(tmp_path, rank=r, world=3, shard_state="gradients",
                       result=str(tmp_path / f"rank-{r}.json")) for r in range(3)]
        assert run_ranks(ranks, list(caps), RUN_S) == [0, 0, 0]
        assert [cap.oom_kills() for cap in caps] == [1, 0, 0]
        results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(3)]
    finally:
        for cap in caps:
            cap.close()
    for result, limit in zip(results, CAPS, strict=True):
        # Every rank, the benched one too, ends with one process's parameters.
        assert result["max_diff"] <= 1e-6 * result["max_ref"], result
        assert result["state_budget"] < limit  # its cgroup's room, not the machine's memory
    owned = [r["owned"] for r in results]
    assert owned[0] < owned[1] < owned[2]  # slices sized by the hosts' room
    # The small host's state fits its cap; the replicated state would not.
    assert results[0]["state_bytes"] < CAPS[0] < 4 * PARAMETER_BYTES
