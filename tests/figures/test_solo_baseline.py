"""% of Σ solo and × fastest host follow from the hosts' solo figures (rank 0's ``capacity``
event) and the run's steps, one derivation (``figures/solo.py``) for the report and the
console; the reason when either is low and the advice when the fastest host alone wins."""

from __future__ import annotations

import pytest

from figures.reducer import RunFigures
from figures.solo import baseline_of, host_solos, run_baseline
from trainer.events import CapacityEvent, StartEvent, StepEvent

T0 = 1_700_000_000.0


def _run(hosts: tuple[str, ...], solo: tuple[float | None, ...], sources: tuple[str, ...],
         split: tuple[int, ...], compute_s: tuple[float, ...], step_s: float,
         steps: int = 4) -> RunFigures:
    """A run of ``steps`` equal steps: each rank's share and compute seconds, the step's time."""
    figures = RunFigures()
    for rank, host in enumerate(hosts):
        figures.observe(StartEvent(
            t=T0, rank=rank, world_size=len(hosts), local_rank=0, host=host, pid=1,
            device="cpu", device_name="cpu", backend="gloo", model="m", dataset="d",
            global_batch=sum(split), split=split, policy="dynamic", step=0, total_steps=steps,
            steps_per_epoch=100, threads=1, slowdown=1.0), host)
    figures.observe(CapacityEvent(t=T0, rank=0, source="profile", samples_per_s=solo,
                                  max_batch=(None,) * len(hosts), solo_samples_per_s=solo,
                                  solo_source=sources, solo_batch=(64,) * len(hosts)), hosts[0])
    for step in range(1, steps + 1):
        for rank, host in enumerate(hosts):
            figures.observe(StepEvent(t=T0 + step, rank=rank, step=step, epoch=0,
                                      local_batch=split[rank], loss=1.0,
                                      compute_s=compute_s[rank], step_s=step_s), host)
    return figures


# hosts, solo samples/s by rank, split, compute s, step s -> % of Σ solo, × fastest
TABLE = [
    # 1:3 pair at the oracle's split, little exchange: close to Σ solo, above the fastest
    (("fast", "slow"), (300.0, 100.0), (48, 16), (0.16, 0.16), 0.168, 64 / 0.168 / 400,
     64 / 0.168 / 300),
    # two ranks on one host add up: the host's solo is their sum
    (("a", "a", "b"), (100.0, 100.0, 100.0), (20, 20, 20), (0.2, 0.2, 0.2), 0.25,
     60 / 0.25 / 300, 60 / 0.25 / 200),
    # a slow exchange: the cluster is slower than its fastest host alone
    (("fast", "slow"), (300.0, 100.0), (48, 16), (0.16, 0.16), 0.4, 64 / 0.4 / 400,
     64 / 0.4 / 300),
]


@pytest.mark.parametrize(("hosts", "solo", "split", "compute", "step_s", "of_sum", "x_fastest"),
                         TABLE)
def test_the_ratios_follow_from_the_solo_figures_and_the_steps(
        hosts: tuple[str, ...], solo: tuple[float, ...], split: tuple[int, ...],
        compute: tuple[float, ...], step_s: float, of_sum: float, x_fastest: float) -> None:
    figures = _run(hosts, solo, ("profile",) * len(hosts), split, compute, step_s)
    for live in (False, True):  # the whole run's (report) and the newest step's (live header)
        baseline = run_baseline(figures, live=live)
        assert baseline.of_sum == pytest.approx(of_sum)
        assert baseline.x_fastest == pytest.approx(x_fastest)
        assert baseline.sources == "solo: profile"
    assert (baseline.advice != "") == (x_fastest < 1.0)


def test_a_cluster_slower_than_its_fastest_host_says_so_and_what_would_fix_it() -> None:
    figures = _run(("fast", "slow"), (300.0, 100.0), ("profile", "probe"), (48, 16),
                   (0.16, 0.16), 0.4)
    baseline = run_baseline(figures, live=False)
    assert "slower than fast alone (300 samples/s)" in baseline.advice
    assert "train on fast alone" in baseline.advice and "dynamic" in baseline.advice
    assert "exchange" in baseline.reason  # 60 % of the step outside forward+backward
    assert baseline.sources == "solo: profile fast, probe slow"


def test_a_benched_host_is_the_reason_given() -> None:
    figures = _run(("fast", "slow"), (300.0, 100.0), ("probe", "probe"), (64, 0),
                   (0.22, 0.0), 0.25)
    baseline = run_baseline(figures, live=True)
    assert baseline.of_sum == pytest.approx(64 / 0.25 / 400)
    assert baseline.reason.startswith("slow benched")


def test_an_unknown_solo_figure_leaves_both_ratios_unknown_and_says_which() -> None:
    figures = _run(("fast", "slow"), (300.0, None), ("profile", "unknown"), (32, 32),
                   (0.1, 0.3), 0.31)
    baseline = run_baseline(figures, live=False)
    assert baseline.of_sum is None and baseline.x_fastest is None and baseline.reason == ""
    assert baseline.sources == "solo: profile fast, unknown slow"


def test_a_run_before_its_capacity_event_has_no_solo_figures() -> None:
    assert run_baseline(RunFigures(), live=True).hosts == ()
    assert host_solos([], [], []) == ()
    assert baseline_of((), 100.0).of_sum is None
