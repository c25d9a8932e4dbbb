"""bf16 autocast on CPU ranks: it trains, and stays within the documented tolerance of fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow

COMMON = ("--samples", "512", "--global-batch", "32", "--steps", "20", "--seed", "3",
          "--lr", "0.05", "--momentum", "0.9")
BF16_TOLERANCE = 0.05
"""Max per-tensor relative difference from fp32 after 20 steps (docs/trainer.md, Precision)."""


def test_bf16_on_cpu_trains_and_stays_close_to_fp32(tmp_path: Path) -> None:
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    check(launch(1, *COMMON, "--split", "32", "--run-dir", str(fp32)))
    check(launch(2, *COMMON, "--split", "20,12", "--precision", "bf16", "--run-dir", str(bf16)))
    for rank in (0, 1):
        assert of_kind(events(bf16, rank), "start")[0]["precision"] == "bf16"
    losses = [e["global_loss"] for e in of_kind(events(bf16, 0), "step")]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # the loss falls
    diff = max_rel_diff(final_params(fp32), final_params(bf16))
    print(f"bf16 vs fp32 after 20 steps: max relative difference {diff:.2e}")
    # bf16 really ran (rounding at 8 bits shows), and stays within the tolerance.
    assert 1e-4 < diff <= BF16_TOLERANCE
