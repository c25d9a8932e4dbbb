"""A sharded run's balancer benches a rank for its compute alone: the rank still holds its slice
and takes part in every step's exchange, so the balancer predicts the same exchange without it
as with it (trainer/balance/cost.py), and the result stays one process's (real ranks, gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow  # trainer ranks

COMMON = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "256",
          "--global-batch", "16", "--steps", "6", "--seed", "3", "--lr", "0.05",
          "--momentum", "0.9", "--clip-grad", "1.0")


def test_a_sharded_run_benches_a_slow_rank_for_its_compute_and_keeps_its_exchange(
        tmp_path: Path) -> None:
    one, benched = tmp_path / "one", tmp_path / "benched"
    check(launch(1, *COMMON, "--run-dir", str(one)))
    # Rank 2, sixty times slower, is benched at the first decision (step 4), once the
    # exchange has been measured (three steps).
    check(launch(3, *COMMON, "--shard-state", "gradients", "--state-budget", "1,2,4",
                 "--policy", "dynamic", "--rebalance-every", "4", "--slowdown", "1,1,60",
                 "--run-dir", str(benched)))
    bench = next(e for e in of_kind(events(benched, 0), "rebalance") if e["split"][2] == 0)
    assert "it holds a slice: its exchange stays" in bench["reason"]
    assert bench["exchange_s"][0] == bench["exchange_s"][1] > 0
    assert max_rel_diff(final_params(one), final_params(benched)) <= 1e-6
