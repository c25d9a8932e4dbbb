"""The console's header and ``corral report`` say the same about the same run: a recorded run
replayed into the console's model (as the runs screen opens it) and the same run followed live
show the report's throughput, ideal, compute share, % of Σ solo and × fastest, wall time,
per-rank utilisation, loss and measured balancer gains, for completed, failed, evaluated and
restarted runs, and for a run an older trainer recorded (its step events carry throughputs
the readers no longer use).
While a run is followed, each rank's columns are its newest step's and the efficiency is one
step's: the newest every rank reported, its throughput against its own ideal, as the report's
per-step series has them."""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from console.formatting import fmt_duration, fmt_percent, fmt_rate
from console.model.recorded import model_from_history
from console.model.run import RunModel
from console.report import facts
from console.widgets.header import finished_parts, header_text
from figures.solo import baseline_of
from remote.api import RankEvent, RunStatus
from remote.records.history import load_history
from remote.records.summary import RunSummary, summarize
from trainer.events import StepEvent

try:
    from tests.remote.recorded import (
        as_older_trainer,
        info,
        restarted_run,
        synthetic_run,
        write_recorded,
    )
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import (  # type: ignore[no-redef]
        as_older_trainer,
        info,
        restarted_run,
        synthetic_run,
        write_recorded,
    )

RUNS: dict[str, tuple[str, Any]] = {
    "completed": ("completed", lambda: synthetic_run(steps=20)),
    "failed": ("failed", lambda: synthetic_run(steps=12, end="failed",
                                               error="RuntimeError: out of memory")),
    "evaluated": ("completed", lambda: synthetic_run(steps=20, extra=True)),
    "restarted": ("completed", restarted_run),
    "older": ("completed", lambda: as_older_trainer(synthetic_run(steps=20))),
}
LATER = 4_000_000_000.0
"""A clock reading long after every run: a finished run's elapsed time must not depend on it."""


def _recorded(tmp_path: Path, kind: str) -> tuple[Any, RunSummary]:
    state, lines = RUNS[kind]
    run_dir = tmp_path / "runs" / f"rep-{kind}"
    write_recorded(run_dir, info(f"rep-{kind}", state, detail="why" if state != "completed"
                                 else ""), lines())
    history = load_history(run_dir)
    summary, _ = summarize(history)
    return history, summary


def _followed_live(history: Any, summary: RunSummary) -> RunModel:
    """The same events as the console receives them while following the run."""
    model = RunModel.of_run(history.info.run_id)
    first_t = history.lines[0].t
    model.apply(RunStatus(t=first_t - 5.0, run_id=history.info.run_id, state="running"))
    for line in history.lines:
        model.apply(RankEvent(host=line.host, event=line.event))
    model.apply(RunStatus(t=history.lines[-1].t + 2.0, run_id=history.info.run_id,
                          state=summary.outcome.state,  # type: ignore[arg-type]
                          failed_host=summary.outcome.failed_host,
                          failed_rank=summary.outcome.failed_rank))
    return model


def _assert_same(model: RunModel, summary: RunSummary) -> None:
    assert model.finished
    assert model.samples_per_s == summary.mean_samples_per_s
    assert model.ideal_samples_per_s == summary.ideal_samples_per_s
    assert model.efficiency == summary.efficiency
    assert model.elapsed_s(LATER) == summary.wall_s and summary.wall_s
    rows = {row.rank: row for row in model.sorted_ranks()}
    for rank in summary.ranks:
        assert rows[rank.rank].compute_share == pytest.approx(rank.utilisation, rel=1e-12)
        assert rows[rank.rank].samples_per_s == rank.mean_samples_per_s
        assert rows[rank.rank].compute_s and rows[rank.rank].step_s
    assert [d.measured_gain for d in model.decisions] == [m.measured_gain for m in summary.moves]
    # What the header writes is what the report writes.
    header = "  ".join(finished_parts(model, LATER))
    assert f"in {fmt_duration(summary.wall_s)}" in header
    assert f"mean {fmt_rate(summary.mean_samples_per_s)} samples/s" in header
    assert "eff " not in header  # the compute share is the throughput panel's, named so
    baseline = summary.baseline
    assert baseline is not None and model.baseline == baseline
    assert baseline.of_sum is not None and baseline.x_fastest is not None
    assert f"{fmt_percent(baseline.of_sum)} of Σ solo" in header
    assert f"{baseline.x_fastest:.2f}× fastest" in header
    assert summary.loss is not None and f"loss {summary.loss.final:.4g}" in header


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_the_past_runs_screen_shows_the_reports_figures(tmp_path: Path, kind: str) -> None:
    history, summary = _recorded(tmp_path, kind)
    model = model_from_history(history, summary.outcome, cluster_name="rep", policy="dynamic")
    _assert_same(model, summary)


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_run_followed_live_ends_on_the_reports_figures(tmp_path: Path, kind: str) -> None:
    history, summary = _recorded(tmp_path, kind)
    _assert_same(_followed_live(history, summary), summary)


def test_a_restarted_run_counts_its_redone_steps_once(tmp_path: Path) -> None:
    _, summary = _recorded(tmp_path, "restarted")
    assert summary.restarts == 1 and summary.steps_done == 20
    # Steps 6-10 ran twice: first on the rebalanced split (12, 4), then again on (8, 8); the
    # mean is that of steps 1-20 as they last ran, all on (8, 8).
    step_s = 8 * 0.003 + 0.002
    assert summary.mean_samples_per_s == pytest.approx(16 / step_s)
    assert summary.ideal_samples_per_s == pytest.approx(8 / 0.008 + 8 / 0.024)
    assert summary.lost_s == pytest.approx(30.0 + 5 * step_s)
    # The move's window (steps 6-10) was redone on the old split: it gained nothing.
    assert [m.measured_gain for m in summary.moves] == [pytest.approx(0.0)]


def _report_text(summary: RunSummary) -> str:
    out = Console(width=400, record=True, file=io.StringIO())
    out.print(facts(summary))
    return out.export_text()


def test_the_report_sets_the_run_against_its_hosts_alone(tmp_path: Path) -> None:
    """fast trains 1000 samples/s alone (its profile), slow 333 (a probe): the report's % of
    Σ solo and × fastest are the run's mean samples/s against them, with where they came from;
    a run slower than its fastest host alone says so and what would fix it."""
    _, summary = _recorded(tmp_path, "completed")
    text = _report_text(summary)
    mean = summary.mean_samples_per_s
    assert mean is not None
    assert (f"{fmt_percent(mean / (1000 + 1000 / 3))} of Σ solo 1333 samples/s · "
            f"{mean / 1000:.2f}× fastest host (fast) · solo: profile fast, probe slow") in text
    assert "compute share" in text and "why low" in text
    slower = summary_with_step_s(summary, 0.05)
    assert "slower than fast alone (1000 samples/s): train on fast alone" in _report_text(slower)


def summary_with_step_s(summary: RunSummary, step_s: float) -> RunSummary:
    """``summary`` as if every step had taken ``step_s``: 16 samples / 0.05 s = 320 samples/s,
    below the fastest host's 1000 alone."""
    hosts = summary.baseline.hosts if summary.baseline else ()
    return replace(summary, baseline=baseline_of(hosts, 16 / step_s))


def _rank1_lagging(lines: list[Any]) -> list[Any]:
    """The run's lines as a follower may receive them: rank 1's step events each arrive after
    rank 0's next step, so rank 0's newest step is often one rank 1 has not reported yet."""
    held: list[Any] = []
    out: list[Any] = []
    for line in lines:
        if isinstance(line.event, StepEvent) and line.event.rank == 1:
            held.append(line)
            continue
        out.append(line)
        if isinstance(line.event, StepEvent) and line.event.rank == 0 and len(held) > 1:
            out.append(held.pop(0))
    return out + held


@pytest.mark.parametrize("kind", ["completed", "older"])
def test_a_followed_run_shows_one_steps_efficiency_and_each_ranks_newest_step(
        tmp_path: Path, kind: str) -> None:
    history, _ = _recorded(tmp_path, kind)
    _, series = summarize(history)
    by_step = dict(zip(series.steps, zip(series.samples_per_s, series.ideal, strict=True),
                       strict=True))
    model = RunModel.of_run(history.info.run_id)
    model.apply(RunStatus(t=history.lines[0].t, run_id=history.info.run_id, state="running"))
    newest: dict[int, StepEvent] = {}
    checked = 0
    for line in _rank1_lagging(list(history.lines)):
        model.apply(RankEvent(host=line.host, event=line.event))
        if not isinstance(line.event, StepEvent):
            continue
        newest[line.event.rank] = line.event
        for rank, event in newest.items():  # each rank's columns: its newest step's
            row = model.ranks[rank]
            assert (row.step, row.compute_s, row.step_s) == (
                event.step, event.compute_s, event.step_s)
            assert row.samples_per_s == pytest.approx(event.local_batch / event.step_s)
        if len(newest) == 2:  # one step's throughput against that step's ideal
            measured, ideal = by_step[min(e.step for e in newest.values())]
            assert measured is not None and ideal is not None
            assert model.efficiency == pytest.approx(measured / ideal, rel=1e-12)
            checked += 1
    assert checked > 10


def test_the_live_header_says_why_when_a_ratio_is_low() -> None:
    """A run whose slow host was benched (a share of 0): the header shows the newest step's %
    of Σ solo and × fastest, and last, why they are low."""
    model = RunModel.of_run("bench-1")
    t0 = 1_700_000_000.0
    model.apply(RunStatus(t=t0, run_id="bench-1", state="running"))
    lines = synthetic_run(steps=3, move_at=None)
    for host, event in lines:
        if isinstance(event, StepEvent):  # fast takes the whole batch: slow sits out
            event = replace(event, local_batch=16 if event.rank == 0 else 0,
                            compute_s=0.016 if event.rank == 0 else 0.0, step_s=0.02)
        if not isinstance(event, dict):
            model.apply(RankEvent(host=host, event=event))
    text = header_text(model, t0 + 1.0, 200).plain
    # 16 samples / 0.02 s = 800 samples/s, of Σ solo 1000 + 333 and of fast's 1000 alone
    assert "60% of Σ solo  0.80× fastest" in text
    assert "low: slow benched (no share: its exchange does not pay) — slower than fast alone" \
           " (1000 samples/s): train on fast alone" in text
