"""causal_lm (LoRA, tiny model) in micro-batches: the parameters of one process, in fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_fixtures import TinyLM, lm_flags, make_tiny_lm
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow


def test_micro_batches_of_1_3_and_none_give_the_same_lora_weights(tmp_path: Path) -> None:
    lm: TinyLM = make_tiny_lm(tmp_path / "lm")
    # With the gradient clipped (a norm small enough to bind) and a warmed-up cosine schedule.
    flags = (*lm_flags(lm), "--steps", "6", "--global-batch", "32", "--clip-grad", "0.05",
             "--lr-schedule", "cosine", "--warmup-steps", "2")
    params = {}
    for split, micro in (("32", None), ("20,8,4", "1"), ("20,8,4", "3")):
        run_dir = tmp_path / f"{split.replace(',', '-')}-m{micro}"
        extra = ("--micro-batch", micro) if micro else ()
        check(launch(len(split.split(",")), *flags, "--split", split, *extra,
                     "--run-dir", str(run_dir)))
        params[(split, micro)] = final_params(run_dir)
        steps = of_kind(events(run_dir, 0), "step")
        assert any(e["grad_norm"] > 0.05 for e in steps)  # the clip really bound
        lrs = [e["lr"] for e in steps]  # warm-up up to --lr, then cosine down to 0
        assert lrs[0] < lrs[1] == max(lrs) and lrs[-1] == 0.0
        if micro:  # rank 0's share of 20 really ran as ceil(20/m) passes
            passes = {e["passes"] for e in of_kind(events(run_dir, 0), "step")}
            assert passes == {-(-20 // int(micro))}
    reference = params.pop(("32", None))
    for key, p in params.items():
        assert max_rel_diff(reference, p) <= 1e-5, key
