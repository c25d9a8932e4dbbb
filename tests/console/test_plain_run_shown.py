"""What a plain script's run shows (a script without corral's opt-in: no global batch, no loss,
no balancing, no length): the loss panel says its loss is unknown and what reports it, the
header counts steps and their rate without a bar or a percentage, the balancer panel says
nothing is balanced and what would, ``corral report`` says the same, and without a terminal the
progress lines come by time, not one per optimizer step. A run with the opt-in keeps its
percentage and policy."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from console.follow import PROGRESS_EVERY_S, follow_run
from console.formatting import OPT_IN_HINT
from console.model.run import RunModel
from console.report import facts
from console.widgets.balancer import policy_line
from console.widgets.header import progress_line
from console.widgets.loss import title_line
from remote.api import RankEvent, RunStatus
from remote.records.history import load_history
from remote.records.summary import summarize
from tests.fake_runs import FakeRun
from trainer.events import StartEvent, StepEvent, TrainerEvent

try:
    from tests.remote.recorded import info, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import info, write_recorded  # type: ignore[no-redef]

STEP_S = 0.5
"""A step every half second of the run's time: 200 steps are 100 s."""


FLUSH_STEPS = 2
"""Steps each rank's events arrive by (a plain script's ranks write theirs once a second)."""


def _events(steps: int, *, declared: bool = False) -> list[TrainerEvent]:
    """Two ranks' events, each rank's flush of ``FLUSH_STEPS`` steps after the other's."""
    out: list[TrainerEvent] = []
    for rank in (0, 1):
        out.append(StartEvent(
            t=1000.0, rank=rank, world_size=2, local_rank=0, host=f"h{rank}", pid=1,
            device="cpu", device_name="cpu", backend="gloo", model="train.py", dataset="",
            global_batch=16 if declared else 0, split=(8, 8) if declared else (),
            policy="dynamic" if declared else "", step=0,
            total_steps=steps if declared else 0, steps_per_epoch=0, threads=1,
            slowdown=1.0, task="script", exact=declared))
    for first in range(1, steps + 1, FLUSH_STEPS):
        out += [StepEvent(t=1000.0 + step * STEP_S, rank=rank, step=step, epoch=0,
                          local_batch=8, loss=None, compute_s=0.2, step_s=STEP_S)
                for rank in (0, 1)
                for step in range(first, min(first + FLUSH_STEPS, steps + 1))]
    return out


def _model(events: list[TrainerEvent]) -> RunModel:
    model = RunModel.of_run("p")
    model.apply(RunStatus(t=999.0, run_id="p", state="running"))
    for event in events:
        model.apply(RankEvent(host=f"h{event.rank}", event=event))
    return model


def test_the_panels_say_what_a_plain_run_has_and_lacks() -> None:
    model = _model(_events(12))
    assert model.plain_script
    loss = title_line(model).plain
    assert loss.startswith("loss unknown") and OPT_IN_HINT in loss
    assert policy_line(model).plain.startswith("no balancing: plain script")
    assert OPT_IN_HINT in policy_line(model).plain
    header = progress_line(model, now=1010.0, width=120).plain
    assert "step 12" in header and "32.0 samples/s" in header  # 16 samples a half second
    assert "%" not in header and "█" not in header and "ETA" not in header


def test_a_run_with_the_opt_in_keeps_its_percentage_and_policy() -> None:
    model = _model(_events(12, declared=True))
    assert not model.plain_script
    assert "100%" in progress_line(model, now=1010.0, width=120).plain
    assert policy_line(model).plain.startswith("policy dynamic")
    assert not title_line(model).plain.startswith("loss unknown")


async def test_without_a_terminal_a_plain_runs_progress_comes_by_time() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    steps = 200
    script = [RunStatus(t=999.0, run_id="p", state="running"),
              *[RankEvent(host=f"h{e.rank}", event=e) for e in _events(steps)],
              RunStatus(t=1000.0 + steps * STEP_S + 1, run_id="p", state="completed")]
    assert await follow_run(FakeRun("p", script), console=console) == 0
    progress = [line for line in out.getvalue().splitlines() if line.startswith("step ")]
    # the first step at once, then one per PROGRESS_EVERY_S of the run's 100 s, and the end
    expected = 1 + int(steps * STEP_S // PROGRESS_EVERY_S) + 1
    assert len(progress) == expected, progress
    assert progress[0] == "step 1"  # rank 1's samples of it are not in yet: no rate
    assert progress[-1] == f"step {steps} · {16 / STEP_S:.0f} samples/s"  # the run's mean
    assert all("%" not in line and "samples/s" in line for line in progress[1:])


def test_the_report_says_a_plain_run_is_not_balanced(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "p"
    write_recorded(run_dir, info("p", "completed"),
                   [(f"h{e.rank}", e) for e in _events(12)])
    summary, _ = summarize(load_history(run_dir))
    assert summary.plain_script
    text = Console(width=400, color_system=None, file=io.StringIO())
    with text.capture() as captured:
        text.print(facts(summary))
    training = next(line for line in captured.get().splitlines()
                    if line.startswith("training"))
    assert "policy ?" not in training and "global batch ?" not in training
    assert "no balancing" in training and OPT_IN_HINT in training
    assert summary.mean_samples_per_s == 16 / STEP_S  # both ranks' samples


def test_a_finished_plain_runs_table_shows_each_ranks_samples_per_step() -> None:
    """Not its last step's batch, which is the tail of an epoch: 11 steps of 8, then 3."""
    events = [e if not isinstance(e, StepEvent) or e.step < 12 else
              StepEvent(t=e.t, rank=e.rank, step=12, epoch=0, local_batch=3, loss=None,
                        compute_s=0.1, step_s=STEP_S) for e in _events(12)]
    model = _model(events)
    assert [model.ranks[r].local_batch for r in (0, 1)] == [3, 3]  # live: the newest step's
    model.apply(RunStatus(t=1010.0, run_id="p", state="completed"))
    assert [model.ranks[r].local_batch for r in (0, 1)] == [round((11 * 8 + 3) / 12)] * 2
