"""Models, slowdown emulation and checkpoint files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from trainer.checkpoint.files import (
    list_checkpoints,
    load_newest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer.settings.train_config import SlowdownChange
from trainer.step.clock import CpuClock
from trainer.step.slowdown import (
    SlowdownSchedule,
    WorkTimer,
    emulate_slowdown,
    emulates,
)
from trainer.tasks.image.models import build_model


def test_norm_choice_changes_the_layers() -> None:
    def kinds(norm: str) -> set[str]:
        return {type(m).__name__ for m in build_model("resnet18", 100, norm).modules()}
    assert "BatchNorm2d" in kinds("batch") and "GroupNorm" not in kinds("batch")
    assert "GroupNorm" in kinds("group") and "BatchNorm2d" not in kinds("group")
    assert "SyncBatchNorm" in kinds("syncbatch")


def test_emulated_slowdown_sleeps_the_extra_time(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = time.perf_counter()
    assert emulate_slowdown(3.0, 0.05) == pytest.approx(0.15)
    assert time.perf_counter() - t0 >= 0.099
    slept: list[float] = []  # the sleeps asked for: a loaded machine delays any return
    monkeypatch.setattr(time, "sleep", slept.append)
    assert emulate_slowdown(1.0, 0.5) == 0.5
    assert slept == []  # factor 1: no sleep at all


def test_emulated_slowdown_scales_the_ranks_own_time_not_its_wait_for_the_core(
        monkeypatch: pytest.MonkeyPatch) -> None:
    timer = WorkTimer()
    timer.start()
    time.sleep(0.1)  # waiting (for a shared core, say) is no work of this rank
    wall, own = timer.read()
    assert wall >= 0.099 and own < 0.05
    # The sleeps it asks for, not the wall clock: on a loaded machine a 0.03 s sleep has
    # returned 0.17 s later (the torch matrix's run beside the serial tests).
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    # 3x slower: three times the rank's own 0.05 s, of which 0.12 s have passed already.
    assert emulate_slowdown(3.0, 0.05, 0.12) == pytest.approx(0.15)
    assert slept == [pytest.approx(0.03)]
    # Waiting for the core took longer than the emulated device would: its time still counts
    # the rank's own work only, so a busy machine does not change the emulated speed.
    slept.clear()
    assert emulate_slowdown(2.0, 0.05, 0.2) == pytest.approx(0.1)
    assert slept == []
    assert emulates((1.0, 3.0)) and emulates((1.0,), (SlowdownChange(step=9, rank=1, factor=4),))
    assert not emulates((1.0, 1.0)) and not emulates(None)


def test_slowdown_schedule_changes_at_the_given_step() -> None:
    changes = (SlowdownChange(step=50, rank=1, factor=2.0),
               SlowdownChange(step=20, rank=1, factor=1.5),
               SlowdownChange(step=10, rank=0, factor=4.0))
    s = SlowdownSchedule(1.0, changes, rank=1)
    assert [s.factor_at(n) for n in (1, 19, 20, 49, 50, 99)] == [1, 1, 1.5, 1.5, 2, 2]
    assert SlowdownSchedule(3.0, changes, rank=2).factor_at(60) == 3.0


def _state(step: int) -> dict[str, object]:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_checkpoints_are_atomic_pruned_and_truncation_is_detected(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, _state(step), keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 15, 10]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    newest = tmp_path / "checkpoints" / "step-00000020.pt"
    newest.write_bytes(newest.read_bytes()[:-200])  # cut short
    found = load_newest_checkpoint(tmp_path)
    assert found is not None
    path, state, skipped = found
    assert path.name == "step-00000015.pt" and state["step"] == 15
    assert skipped and skipped[0].startswith("step-00000020.pt")
    assert torch.equal(state["model"]["w"], torch.full((3,), 15.0))
    assert load_newest_checkpoint(tmp_path / "nothing-here") is None


def test_rng_state_round_trips() -> None:
    saved = rng_state()
    a = torch.rand(4)
    set_rng_state(saved)
    assert torch.equal(torch.rand(4), a)


def _burn(cpu_s: float) -> None:
    """Work on this thread until the process has used ``cpu_s`` more seconds of CPU."""
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        sum(range(1000))


def test_a_benched_rank_emulates_nothing_while_its_probe_works() -> None:
    # A benched rank runs no pass; its probe thread works meanwhile, and the process's CPU
    # time counts every thread. Its step is no work of a slow device: nothing to sleep.
    clock = CpuClock(emulated_run=True)
    clock.start(60.0)
    probe = threading.Thread(target=_burn, args=(0.05,))
    probe.start()
    probe.join()
    t0 = time.perf_counter()
    clock.passes_done(False)
    assert clock.tally_time(1, None) == (1, 0.0) and clock.times(1) == (1, 0.0)
    assert time.perf_counter() - t0 < 0.5  # 60 x the probe's 0.05 s would be 3 s


def test_without_the_hook_a_slower_device_is_emulated_once_when_the_passes_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A step with a benched rank all-reduces explicitly after the passes: the slow rank's
    # extra time is slept before it (as the hook does), and reading the time sleeps no more.
    clock = CpuClock(emulated_run=True)
    began = time.perf_counter()
    clock.start(3.0)
    _burn(0.05)
    clock.passes_done(True)
    passed = time.perf_counter() - began
    slept: list[float] = []  # the sleeps asked for: a loaded machine delays any return
    monkeypatch.setattr(time, "sleep", slept.append)
    _, seconds = clock.tally_time(1, None)
    assert seconds == clock.times(1).seconds and seconds >= 0.15  # 3 x at least 0.05 s
    assert slept == []  # read, not slept again
    assert passed >= seconds - 0.005  # the emulated time had passed when the passes ended
