"""``corral report`` shows the training state each rank held against its memory budget, as
its start event reported them (``shard_state``: each rank's slice of the optimizer state)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rich.console import Console

from console.report import ranks_table
from remote.records.history import load_history
from remote.records.summary import summarize
from trainer.events import StartEvent

try:
    from tests.remote.recorded import HOSTS, info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import HOSTS, info, synthetic_run, write_recorded  # type: ignore[no-redef]

GIB = 1 << 30
STATE = {0: (3 * GIB, 4 * GIB), 1: (5 * GIB, 12 * GIB)}
"""Per rank: (state bytes, budget bytes)."""


def test_report_shows_each_rank_s_state_against_its_budget(tmp_path: Path) -> None:
    lines = [(host, dataclasses.replace(event, state_bytes=STATE[event.rank][0],
                                        state_budget=STATE[event.rank][1])
              if isinstance(event, StartEvent) else event)
             for host, event in synthetic_run(steps=4)]
    run_dir = tmp_path / "runs" / "sharded"
    write_recorded(run_dir, info("sharded", "completed"), lines)
    summary, _ = summarize(load_history(run_dir))
    assert [(r.host, r.state_bytes, r.state_budget) for r in summary.ranks] == [
        (HOSTS[0], 3 * GIB, 4 * GIB), (HOSTS[1], 5 * GIB, 12 * GIB)]
    console = Console(width=200, record=True)
    console.print(ranks_table(summary))
    text = console.export_text()
    assert "state / budget" in text and "3.0G / 4.0G" in text and "5.0G / 12G" in text


def test_a_run_whose_ranks_reported_no_state_shows_no_state_column(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "plain"
    write_recorded(run_dir, info("plain", "completed"), synthetic_run(steps=4))
    summary, _ = summarize(load_history(run_dir))
    console = Console(width=200, record=True)
    console.print(ranks_table(summary))
    assert "state / budget" not in console.export_text()
