"""A rank launched to join a running run (``corral join``) is rank 0 of its own launch until the
run lets it in, a number the run's rank 0 holds: it writes no plain-script events (the opt-in
writes its own under its member id once admitted). Before, a joiner whose run ended first wrote
a ``failed`` end into ``metrics/rank-0.jsonl`` of a run that had completed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.integrations import rank_setup, script_main
from trainer.integrations.contract import HANG_LIMIT_ENV, RUN_DIR_ENV
from trainer.membership.contract import JOIN_ENV


def test_a_joiner_writes_no_plain_events_as_rank_0(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ((RUN_DIR_ENV, str(tmp_path)), ("WORLD_SIZE", "1"), ("RANK", "0"),
                        ("LOCAL_RANK", "0"), (HANG_LIMIT_ENV, "0"), (JOIN_ENV, "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(rank_setup, "join", lambda settings: torch.device("cpu"))
    assert script_main._join("train.py") is None
    assert not (tmp_path / "metrics").exists()
