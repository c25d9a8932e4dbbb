"""The plain-terminal follower: what a user (or CI log) sees of a run, and its exit code."""

from __future__ import annotations

import io

from rich.console import Console

from console.follow import follow_run, progress_text
from console.model.run import RunModel
from console.tables import check_table
from remote.api import CheckItem, CheckReport, RankEvent, RunStatus
from tests.fake_runs import FakeHost, FakeRun, scripted_run
from trainer.events import StartEvent, StepEvent

HOSTS = (FakeHost(name="fast", slowdown=1.0), FakeHost(name="slow", slowdown=3.0))


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160, force_terminal=False, color_system=None), out


async def test_a_completed_run_exits_0_with_progress_rebalance_and_rank_table() -> None:
    console, out = plain_console()
    run = FakeRun("r1", scripted_run("r1", hosts=HOSTS, steps=40, rebalance_at=6))
    code = await follow_run(run, console=console)
    text = out.getvalue()
    assert code == 0
    assert "step 40/40 (100%)" in text
    assert "step 2/40 (5%)" in text  # a progress line every twentieth of the run
    assert "step 6: rebalance [30, 30] -> [45, 15]" in text
    assert "run r1: completed" in text
    # The per-rank table at the end: both hosts, their final local batches, status.
    table_rows = [line for line in text.splitlines() if "completed" in line and "│" in line]
    assert len(table_rows) == 2
    assert any("fast" in row and " 45 " in row for row in table_rows)
    assert any("slow" in row and " 15 " in row for row in table_rows)
    # Without a terminal there is no live display: no cursor-control sequences.
    assert "\x1b[" not in text


async def test_a_failed_run_exits_1_and_names_the_first_failing_host_and_rank() -> None:
    console, out = plain_console()
    run = FakeRun("r2", scripted_run("r2", hosts=HOSTS, steps=20, fail=(1, 4)))
    code = await follow_run(run, console=console)
    text = out.getvalue()
    assert code == 1
    assert "slow:1 | RuntimeError: boom" in text
    assert "run r2: failed (first failure: slow rank 1): rank 1 on slow: boom" in text
    # The failed rank's end is in the final table, not a line of its own above it.
    assert "ended failed" not in text


async def test_a_stream_without_a_final_state_is_not_a_success() -> None:
    console, _ = plain_console()
    script = scripted_run("r3", hosts=HOSTS, steps=5)
    run = FakeRun("r3", [e for e in script if not (isinstance(e, RunStatus)
                                                    and e.state == "completed")])
    assert await follow_run(run, console=console) == 1


async def test_detach_mode_returns_once_the_run_is_running() -> None:
    console, out = plain_console()
    run = FakeRun("r4", scripted_run("r4", hosts=HOSTS, steps=5))
    assert await follow_run(run, console=console, until_running=True) == 0
    assert "run r4: running" in out.getvalue()
    assert "step" not in out.getvalue()
    assert not run.finished


async def test_a_failed_preflight_prints_the_check_table_with_fixes() -> None:
    console, out = plain_console()
    report = CheckReport(items=(
        CheckItem(host="fast", name="reachable", ok=True, detail="connected"),
        CheckItem(host="slow", name="torch", ok=False, detail="torch not importable",
                  hint="install torch on slow"),
    ))
    run = FakeRun("r5", [RunStatus(t=1.0, run_id="r5", state="checking"),
                         RunStatus(t=2.0, run_id="r5", state="failed", report=report,
                                   detail="pre-flight check failed")])
    assert await follow_run(run, console=console) == 1
    text = out.getvalue()
    assert "FAIL" in text and "install torch on slow" in text


def test_compute_share_and_eta_come_from_the_events() -> None:
    model = RunModel.of_run("r")
    model.apply(RankEvent(host="a", event=StartEvent(
        t=0.0, rank=0, world_size=1, local_rank=0, host="a", pid=1, device="cpu",
        device_name="cpu", backend="gloo", model="m", dataset="d", global_batch=8, split=(8,),
        policy="static", step=0, total_steps=10, steps_per_epoch=10, threads=1, slowdown=1.0)))
    for step in (1, 2, 3):
        model.apply(RankEvent(host="a", event=StepEvent(
            t=100.0 + 2.0 * step, rank=0, step=step, epoch=0, local_batch=8, loss=1.0 / step,
            compute_s=0.5, step_s=2.0, samples_per_s=4.0, global_loss=1.0 / step,
            cluster_samples_per_s=4.0)))
    assert model.ranks[0].compute_share == 0.25
    assert model.eta_s == 14.0  # 2 s per step, 7 steps left
    assert "ETA 14s" in progress_text(model) and "loss 0.3333" in progress_text(model)


def test_check_table_marks_warnings_apart_from_failures() -> None:
    console, out = plain_console()
    console.print(check_table(CheckReport(items=(
        CheckItem(host="a", name="interface", ok=True, detail="warning: cannot tell"),
        CheckItem(host="a", name="disk", ok=False, detail="0.1 GiB", hint="free space"),
    ))))
    text = out.getvalue()
    assert "warn" in text and "FAIL" in text and "free space" in text


async def test_on_a_terminal_the_progress_and_table_are_a_live_block() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    run = FakeRun("r6", scripted_run("r6", hosts=HOSTS, steps=10, rebalance_at=4))
    assert await follow_run(run, console=console) == 0
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: the block is redrawn in place
    assert "completed · step 10/10 (100%)" in text  # the final frame stays on screen
    assert "step 4: rebalance" in text  # notable events print above the block


async def test_the_follower_renders_the_consoles_run_model() -> None:
    # One model for both renderers: once the run has ended, each rank's row shows its mean
    # over the run (the console's "run averages"), not its last step.
    console, out = plain_console()
    model = RunModel.of_run("r7")
    run = FakeRun("r7", scripted_run("r7", hosts=HOSTS, steps=12, rebalance_at=4))
    assert await follow_run(run, console=console, model=model) == 0
    assert model.state == "completed" and set(model.ranks) == {0, 1}
    table_rows = [line for line in out.getvalue().splitlines() if "│" in line]
    for rank, row in model.ranks.items():
        mean_rate = model.figures.ranks[rank].mean_samples_per_s  # the report's figure
        assert mean_rate is not None and row.samples_per_s == mean_rate
        line = next(line for line in table_rows if line.startswith(f"│ {row.host} "))
        assert f" {mean_rate:.1f} " in line and " CPU " in line and "completed" in line
