"""bench/solo_sum.py's verdicts: % of Σ solo for compute-bound hosts, × fastest where a host's
exchange does not pay, each against its goal, split into the machine's co-location loss and
corral's own; the arms' interleaved schedule; the concurrent solo arm's rates over the window
where every host ran; a scenario it does not know is named."""

from __future__ import annotations

import pytest

from bench._loss_split import Parts, cluster_parts, concurrent_steps, overlap_rates
from bench.solo_sum import Round, load_lines, main, schedule, verdicts
from figures.solo import SoloBaseline
from trainer.events import StepEvent


def _round(solo: list[float], cluster: float, concurrent: list[float] | None = None) -> Round:
    own = SoloBaseline(cluster_samples_per_s=cluster, hosts=(), of_sum=None, x_fastest=None)
    return Round(solo=solo, concurrent=concurrent or solo, cluster=cluster, own=own,
                 split="48,16", parts=Parts(ideal=cluster, balance=1.0, jitter=1.0, outside=1.0))


def test_each_scenario_is_judged_against_its_own_goal() -> None:
    lines = verdicts({"pair": [_round([300.0, 100.0], 390.0)],
                      "three": [_round([300.0, 150.0, 100.0], 500.0)],
                      "slow": [_round([300.0, 20.0], 290.0)]})
    assert [line.split(";")[0] for line in lines] == [
        "pair: 0.975 of Σ solo (goal >= 0.95: met)",
        "three: 0.909 of Σ solo (goal >= 0.95: MISSED)",
        "slow: 0.967 × fastest (goal >= 1.0: MISSED)"]


def test_the_gap_to_sigma_solo_splits_into_the_machines_loss_and_corrals() -> None:
    # Alone 300 + 100; at once 270 + 90 (the machine keeps 0.9); the cluster 324 (0.9 of 360).
    rounds = [_round([300.0, 100.0], 324.0, [270.0, 90.0]),
              _round([300.0, 100.0], 380.0, [300.0, 100.0]),
              _round([300.0, 100.0], 300.0, [240.0, 80.0])]
    assert rounds[0].co_location == pytest.approx(0.9)
    assert rounds[0].corral_own == pytest.approx(0.9)
    assert rounds[0].of_sum == pytest.approx(rounds[0].co_location * rounds[0].corral_own)
    (line,) = verdicts({"pair": rounds})
    assert line.endswith("machine 0.900 (0.800-1.000), corral 0.938 (0.900-0.950)")


def test_each_round_rotates_the_scenarios_and_the_arms() -> None:
    order = schedule(["pair", "three"], 3)
    assert len(order) == 3 * 2 * 3
    assert order[:6] == [(1, "pair", "solo"), (1, "pair", "concurrent"), (1, "pair", "cluster"),
                         (1, "three", "solo"), (1, "three", "concurrent"),
                         (1, "three", "cluster")]
    assert order[6:9] == [(2, "three", "concurrent"), (2, "three", "cluster"),
                          (2, "three", "solo")]
    firsts = {arm for n, name, arm in order if name == "pair" and
              (n, name, arm) == next(o for o in order if o[0] == n and o[1] == name)}
    assert firsts == {"solo", "concurrent", "cluster"}


def test_faster_hosts_run_more_steps_together_so_all_overlap() -> None:
    assert concurrent_steps((4.0, 12.0), 40) == [120, 40]
    assert concurrent_steps((1.0, 2.0, 3.0), 50) == [150, 75, 50]


def _rank(batch: int, computes: list[float], step_s: float = 0.0) -> list[StepEvent]:
    return [StepEvent(t=float(k), rank=0, step=k, epoch=0, local_batch=batch, loss=None,
                      compute_s=c, step_s=step_s) for k, c in enumerate(computes, 1)]


def test_corrals_loss_splits_into_the_balance_the_jitter_and_the_time_outside_compute() -> None:
    # Rank 0: 48 samples in 0.2 s, then 0.3 s (240, 160/s); rank 1: 16 in 0.1 s each (160/s).
    # Steps of 0.4 s after a first step left out as warm-up.
    ranks = [_rank(48, [9.0, 0.2, 0.3], step_s=0.4), _rank(16, [9.0, 0.1, 0.1])]
    parts = cluster_parts(ranks, skip=1)
    assert parts.ideal == pytest.approx(96 / 0.5 + 32 / 0.2)
    assert parts.balance == pytest.approx(128 / 0.5 / parts.ideal)  # rank 0 computes longer
    assert parts.jitter == pytest.approx(1.0)  # rank 0 is the slowest in every step
    assert parts.outside == pytest.approx(0.5 / 0.8)
    assert parts.balance * parts.jitter * parts.outside == pytest.approx(128 / 0.8 / parts.ideal)


def test_a_different_slowest_rank_each_step_reads_as_jitter_not_as_imbalance() -> None:
    ranks = [_rank(32, [0.1, 0.3, 0.1, 0.3], step_s=0.3), _rank(32, [0.3, 0.1, 0.3, 0.1])]
    parts = cluster_parts(ranks, skip=0)
    assert parts.balance == pytest.approx(1.0)
    assert parts.jitter == pytest.approx(0.8 / 1.2)
    assert parts.outside == pytest.approx(1.0)


def test_a_cluster_without_steps_after_the_warm_up_is_named() -> None:
    with pytest.raises(RuntimeError, match="no step after the first 5"):
        cluster_parts([_rank(32, [0.1] * 5), _rank(32, [0.1] * 5)], skip=5)


def _steps(start: float, step_s: float, count: int) -> list[StepEvent]:
    return [StepEvent(t=start + k * step_s, rank=0, step=k, epoch=0, local_batch=64, loss=None,
                      compute_s=step_s, step_s=step_s) for k in range(1, count + 1)]


def test_concurrent_rates_count_only_steps_while_every_host_ran() -> None:
    # Host 0 starts first and runs 0.25 s steps until t=30, slower (0.5 s) while host 1 runs
    # (t=10..40, 1 s steps): only host 0's slow steps fall in the window where both ran.
    fast = _steps(0.0, 0.25, 40) + [
        StepEvent(t=10.0 + k * 0.5, rank=0, step=40 + k, epoch=0, local_batch=64, loss=None,
                  compute_s=0.5, step_s=0.5) for k in range(1, 41)]
    slow = _steps(10.0, 1.0, 30)
    rates = overlap_rates([fast, slow], 64, skip=5)
    assert rates == [pytest.approx(128.0), pytest.approx(64.0)]


def test_runs_that_did_not_overlap_are_named_not_averaged() -> None:
    with pytest.raises(RuntimeError, match="host 0 ran no step while every host ran"):
        overlap_rates([_steps(0.0, 0.25, 20), _steps(100.0, 1.0, 10)], 64, skip=5)


def test_the_load_is_listed_per_arm_of_each_round() -> None:
    measured = _round([300.0, 100.0], 380.0)
    measured.load = {"concurrent": 3.5, "solo": 1.25, "cluster": 4.0}
    assert load_lines({"pair": [measured]}) == [
        "load pair #1: solo 1.2, concurrent 3.5, cluster 4.0"]


def test_an_unknown_scenario_is_named_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--scenarios", "pair,quad"])
    assert exit_info.value.code == 2
    assert "unknown scenario(s) quad" in capsys.readouterr().err
