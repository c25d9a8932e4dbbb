"""The LLM task sharded: full fine-tuning of the tiny Llama (``causal_lm``, ``lora_r=0``) with
AdamW under ``shard_state`` trains the parameters of the replicated run of the same split, at
stage 1 and 2, with unequal budgets and a benched rank."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_fixtures import TinyLM, lm_flags, make_tiny_lm
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("lm"))


@pytest.mark.slow  # trainer ranks
def test_full_fine_tuning_of_the_tiny_llama_sharded_equals_replicated(
        lm: TinyLM, tmp_path: Path) -> None:
    flags = [*lm_flags(lm, optimizer="adamw", extra=("lora_r=0",)), "--global-batch", "16",
             "--steps", "4", "--split", "4,0,12"]
    runs = {}
    stage1 = ("--shard-state", "optimizer", "--state-budget", "1,2,4")
    stage2 = ("--shard-state", "gradients", "--state-budget", "4,2,1")
    for name, sharding in (("replicated", ()), ("optimizer", stage1), ("gradients", stage2)):
        check(launch(3, *flags, *sharding, "--run-dir", str(tmp_path / name), timeout=600))
        runs[name] = final_params(tmp_path / name)
    # Every weight trained (full fine-tuning: no adapter), the same under any split of the state.
    assert not any("lora" in key for key in runs["replicated"])
    for name in ("optimizer", "gradients"):
        assert max_rel_diff(runs["replicated"], runs[name]) <= 1e-6, name
    # Each rank's start says the state it holds: sharded, its slice's moments by its budget.
    held = [of_kind(events(tmp_path / "optimizer", r), "start")[0]["state_bytes"]
            for r in range(3)]
    assert held[0] < held[1] < held[2]
