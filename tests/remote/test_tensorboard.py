"""TensorBoard files from a recorded run, read back with TensorBoard's own reader."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

import console.cli as cli
from remote.records import tensorboard

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]


def _read(directory: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    board.Reload()
    return board


def test_eval_lr_ideal_and_shares_are_written_per_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "runs" / "r1"
    write_recorded(run_dir, info("r1", "completed"), synthetic_run(steps=20, extra=True))
    written = tensorboard.convert_run(run_dir)
    board = _read(written.directory)
    assert [e.step for e in board.Scalars("eval/loss")] == [5, 10, 15, 20]
    assert board.Scalars("eval/accuracy")[-1].value == pytest.approx(0.2)
    assert board.Scalars("lr/lr")[-1].value == pytest.approx(0.0005)
    # After the move to (12, 4) at step 6: rank 1 holds a quarter of the batch.
    shares = {e.step: e.value for e in board.Scalars("rank_share/rank1")}
    assert shares[5] == pytest.approx(0.5) and shares[6] == pytest.approx(0.25)
    # Ideal = Σ local_batch / compute_s = 8/0.008 + 8/0.024 before the move.
    ideal = {e.step: e.value for e in board.Scalars("throughput/ideal_samples_per_s")}
    assert sorted(ideal) == list(range(1, 21)) and ideal[1] == pytest.approx(1000 + 333.333,
                                                                             rel=1e-5)
    # Converting again rewrites the files rather than adding a second copy of every point.
    tensorboard.convert_run(run_dir)
    assert len(_read(written.directory).Scalars("loss/global")) == 20


def test_a_rank_that_went_quiet_does_not_hold_back_the_others(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    lines = [(h, e) for h, e in synthetic_run(steps=10, move_at=None)
             if not (e.rank == 1 and getattr(e, "step", 0) > 4)]  # type: ignore[union-attr]
    run_dir = tmp_path / "runs" / "r2"
    write_recorded(run_dir, info("r2", "failed"), lines)
    board = _read(tensorboard.convert_run(run_dir).directory)
    assert [e.step for e in board.Scalars("loss/global")] == list(range(1, 11))
    assert [e.step for e in board.Scalars("throughput/efficiency")] == [1, 2, 3, 4]


def test_per_rank_series_thin_out_for_large_clusters(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from trainer.events import StartEvent, StepEvent

    ranks, writer = 64, tensorboard.BoardWriter(tmp_path / "board")
    writer.add(_rec(StartEvent(
        t=0.0, rank=0, world_size=ranks, local_rank=0, host="h", pid=1, device="cpu",
        device_name="c", backend="gloo", model="m", dataset="d", global_batch=ranks,
        split=(1,) * ranks, policy="static", step=0, total_steps=8, steps_per_epoch=8,
        threads=1, slowdown=1.0)))
    for step in range(1, 9):
        for rank in range(ranks):
            writer.add(_rec(StepEvent(
                t=float(step), rank=rank, step=step, epoch=0, local_batch=1, loss=1.0,
                compute_s=0.01, step_s=0.02, samples_per_s=50.0,
                global_loss=1.0 if rank == 0 else None,
                cluster_samples_per_s=3200.0 if rank == 0 else None)))
    writer.close()
    board = _read(tmp_path / "board")
    assert len(board.Scalars("loss/global")) == 8
    assert [e.step for e in board.Scalars("rank_compute_s/rank63")] == [2, 4, 6, 8]


def _rec(event: Any) -> Any:
    from remote.records.history import Recorded

    return Recorded(host="h", rank=event.rank, event=event)


def test_without_the_extra_the_command_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "rep"\nmaster = "fast"\nrun_root = "{tmp_path}/runs"\n'
                    '[[hosts]]\nname = "fast"\naddress = "local"\n', encoding="utf-8")
    write_recorded(tmp_path / "runs" / "r3", info("r3", "completed"), synthetic_run(steps=3))
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    assert cli.main(["-c", str(path), "tensorboard", "--write-only"]) == 2
    assert "corral[tensorboard]" in capsys.readouterr().err


def test_a_writer_thread_that_fails_prints_nothing_its_error_is_raised_where_records_catch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import threading

    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    printed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_value))
    directory = tmp_path / "tensorboard"
    board = tensorboard.BoardWriter(directory)
    board.on_step(1, 1.0, [("loss/global", 1.0)])
    board.flush()
    shutil.rmtree(directory)
    directory.write_text("the run copy can no longer be written")  # its next write fails
    board.on_step(2, 2.0, [("loss/global", 2.0)])
    with pytest.raises(OSError):  # where the follower catches the records' write errors
        board.flush()
    for thread in threading.enumerate():
        if isinstance(thread, _AsyncWriterThread):
            thread.join(timeout=30)
    with contextlib.suppress(OSError):  # said once already
        board.close()
    assert printed == []
    thread = threading.Thread(target=lambda: 1 / 0)  # other threads' errors still reach it
    thread.start()
    thread.join()
    assert len(printed) == 1 and isinstance(printed[0], ZeroDivisionError)
