"""The runs (slow tier) of what ``tests/trainer/test_trainer_config.py`` tests: flags and
validation: bad input is one clear line and exit code 2, before any collective."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from trainer_runs import launch


@pytest.mark.slow
def test_a_split_of_the_wrong_length_fails_every_rank_before_joining(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = launch(2, "--global-batch", "32", "--split", "10,10,12", "--run-dir", str(tmp_path))
    assert proc.returncode != 0
    assert "3 shares but the run has 2 ranks" in proc.stderr
    # Our one line comes first; what follows is the launcher's own failure report.
    assert proc.stderr.splitlines()[0].startswith("corral trainer: invalid input: --split")
    assert time.monotonic() - t0 < 60  # nobody waited for a collective
    assert not (tmp_path / "metrics").exists()
