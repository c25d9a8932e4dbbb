"""bench/solo_sum.py's verdicts: % of Σ solo for compute-bound hosts, × fastest where a host's
exchange does not pay, each against its goal; a scenario it does not know is named."""

from __future__ import annotations

import pytest

from bench.solo_sum import Round, main, verdicts
from figures.solo import SoloBaseline


def _round(solo: list[float], cluster: float) -> Round:
    own = SoloBaseline(cluster_samples_per_s=cluster, hosts=(), of_sum=None, x_fastest=None)
    return Round(solo=solo, cluster=cluster, own=own, split="48,16", compute_share=0.9,
                 outside=0.1)


def test_each_scenario_is_judged_against_its_own_goal() -> None:
    lines = verdicts({"pair": [_round([300.0, 100.0], 390.0)],
                      "three": [_round([300.0, 150.0, 100.0], 500.0)],
                      "slow": [_round([300.0, 20.0], 290.0)]})
    assert lines == ["pair: 0.975 of Σ solo (goal >= 0.95: met)",
                     "three: 0.909 of Σ solo (goal >= 0.95: MISSED)",
                     "slow: 0.967 × fastest (goal >= 1.0: MISSED)"]


def test_an_unknown_scenario_is_named_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--scenarios", "pair,quad"])
    assert exit_info.value.code == 2
    assert "unknown scenario(s) quad" in capsys.readouterr().err
