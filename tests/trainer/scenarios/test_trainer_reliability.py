"""Checkpoints that changed on disk are never trusted, and a diverged run stops cleanly."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from trainer_runs import check, events, launch, of_kind

pytestmark = pytest.mark.slow

COMMON = ("--samples", "64", "--global-batch", "8", "--seed", "3", "--lr", "0.01")


def corrupt_same_size(path: Path) -> None:
    """Overwrite bytes inside the largest stored record: same size, still a valid zip, and
    torch.load would read it without complaint (it does not check record checksums)."""
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "r+b") as f:
        f.seek(largest.header_offset + 26)
        name_len = int.from_bytes(f.read(2), "little")
        extra_len = int.from_bytes(f.read(2), "little")
        f.seek(largest.header_offset + 30 + name_len + extra_len + largest.file_size // 2)
        f.write(b"\x7f" * 64)


def test_a_same_size_overwrite_is_caught_and_the_previous_checkpoint_used(
    tmp_path: Path
) -> None:
    check(launch(1, *COMMON, "--steps", "4", "--checkpoint-every", "2", "--run-dir",
                 str(tmp_path)))
    newest = tmp_path / "checkpoints" / "step-00000004.pt"
    size = newest.stat().st_size
    corrupt_same_size(newest)
    assert newest.stat().st_size == size
    proc = launch(1, *COMMON, "--steps", "6", "--resume", "--run-dir", str(tmp_path))
    check(proc)
    assert "skipped checkpoint step-00000004.pt: content hash mismatch" in proc.stdout
    assert "resuming from the previous good checkpoint" in proc.stdout
    starts = of_kind(events(tmp_path, 0), "start")
    assert [s["step"] for s in starts] == [0, 2]
    assert starts[1]["resumed_from"].endswith("step-00000002.pt")


def test_checkpoints_that_exist_but_do_not_load_are_an_error_not_a_fresh_start(
    tmp_path: Path
) -> None:
    check(launch(1, *COMMON, "--steps", "4", "--checkpoint-every", "2", "--run-dir",
                 str(tmp_path)))
    files = sorted((tmp_path / "checkpoints").glob("step-*.pt"))
    assert [f.name for f in files] == ["step-00000002.pt", "step-00000004.pt"]
    files[0].write_bytes(files[0].read_bytes()[:100])  # torn write
    corrupt_same_size(files[1])
    proc = launch(1, *COMMON, "--steps", "6", "--resume", "--run-dir", str(tmp_path))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "none can be used" in out and "step-00000002.pt" in out and "step-00000004.pt" in out
    assert "content hash mismatch" in out
    # Nothing trained, nothing rotated away: both files are still there for the user.
    assert [s["step"] for s in of_kind(events(tmp_path, 0), "start")] == [0]
    assert sorted((tmp_path / "checkpoints").glob("step-*.pt")) == files
    end = of_kind(events(tmp_path, 0), "end")[-1]
    assert end["status"] == "failed" and "none can be used" in end["error"]


def test_a_non_finite_loss_stops_every_rank_with_a_diverged_end(tmp_path: Path) -> None:
    proc = launch(2, "--samples", "64", "--global-batch", "8", "--split", "4,4", "--seed", "3",
                  "--lr", "1e9", "--steps", "50", "--checkpoint-every", "1",
                  "--run-dir", str(tmp_path))
    assert proc.returncode != 0
    assert "not JSON compliant" not in proc.stdout + proc.stderr
    ends = [of_kind(events(tmp_path, r), "end")[-1] for r in (0, 1)]
    assert [e["status"] for e in ends] == ["diverged", "diverged"]
    assert ends[0]["step"] == ends[1]["step"] < 50
    assert "the loss is" in ends[0]["error"] and "Lower [run] lr" in ends[0]["error"]
    # No checkpoint of the non-finite parameters: the newest is from before the divergence.
    steps = [int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("step-*.pt")]
    assert max(steps, default=0) < ends[0]["step"]
    assert all(s["loss"] == s["loss"] for s in of_kind(events(tmp_path, 0), "step"))
