"""A plain script numbers each attempt's optimizer steps from 1, whatever snapshot it resumed
from: the figures count every attempt's steps after the earlier ones (a restart's time lost is
its gap, not steps taken for redone ones), while corral's own resumed steps are left as they
are numbered. A resume of a run named by an empty word is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import console.cli as cli
from figures.reducer import RunFigures
from remote.config.init import demo_toml
from trainer.events import StartEvent, StepEvent, TrainerEvent


def _start(t: float, rank: int, *, task: str = "script", step: int = 0) -> StartEvent:
    return StartEvent(t=t, rank=rank, world_size=2, local_rank=0, host="h", pid=1,
                      device="cpu", device_name="cpu", backend="gloo", model="train.py",
                      dataset="", global_batch=0, split=(), policy="", step=step,
                      total_steps=0, steps_per_epoch=0, threads=1, slowdown=1.0, task=task)


def _attempt(t0: float, steps: range, **start: object) -> list[TrainerEvent]:
    """Both ranks' events of one attempt, rank 1's arriving first (any order holds)."""
    events: list[TrainerEvent] = []
    for rank in (1, 0):
        events.append(_start(t0, rank, **start))  # type: ignore[arg-type]
        events += [StepEvent(t=t0 + i + 1, rank=rank, step=s, epoch=0, local_batch=4,
                             loss=None, compute_s=0.5, step_s=1.0)
                   for i, s in enumerate(steps)]
    return events


def _figures(events: list[TrainerEvent]) -> RunFigures:
    figures = RunFigures()
    for event in events:
        figures.observe(event)
    return figures


def test_a_relaunched_plain_script_counts_every_attempts_steps() -> None:
    # 6 steps, stopped at t=6; resumed at t=20 from its own snapshot: 24 more, numbered 1..24
    figures = _figures(_attempt(0.0, range(1, 7)) + _attempt(20.0, range(1, 25)))
    assert figures.steps_done == 30 and sorted(figures.rows) == list(range(1, 31))
    assert figures.restarts == 1
    assert figures.lost_s == pytest.approx(20.0 - 6.0)  # the gap alone: nothing was redone
    assert all(set(row.cells) == {0, 1} for row in figures.rows.values())


def test_corrals_own_resumed_steps_keep_their_numbers() -> None:
    # corral's trainer resumes from its step-4 checkpoint: steps 5.. redo 5 and 6
    figures = _figures(_attempt(0.0, range(1, 7), task="image")
                       + _attempt(20.0, range(5, 11), task="image", step=4))
    assert figures.steps_done == 10 and figures.restarts == 1
    assert figures.lost_s == pytest.approx(20.0 - 6.0 + 2 * 1.0)  # the gap and 2 redone steps


def test_steps_a_stopped_rank_never_wrote_do_not_shift_the_next_attempt() -> None:
    # rank 0 was stopped before it wrote steps 2..6 (rank 1 wrote them): both ranks' second
    # attempt goes on from step 6, the furthest the first one reached
    first = [e for e in _attempt(0.0, range(1, 7))
             if not (isinstance(e, StepEvent) and e.rank == 0 and e.step > 1)]
    first.sort(key=lambda e: e.t)
    figures = _figures(first + _attempt(20.0, range(1, 5)))
    assert sorted(figures.rows) == list(range(1, 11)) and figures.steps_done == 10
    assert all(set(figures.rows[s].cells) == {0, 1} for s in range(7, 11))


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_an_empty_run_to_resume_is_refused_not_a_fresh_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        extra: list[str]) -> None:
    # `corral run --resume "$RUN"` with RUN unset: before, "" was no resume at all
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the demo's run_root is under ~
    (tmp_path / "cluster.toml").write_text(demo_toml(), encoding="utf-8")
    assert cli.main(["run", "--resume", "", *extra]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert ("names no run" if not extra else "leave out --resume") in err, err
    assert "Traceback" not in err and not (tmp_path / ".corral" / "runs").exists()
