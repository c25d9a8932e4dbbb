"""The trainer's files and every reader of them meet at the paths RunLayout names.

A rank writes its events through the trainer's writer; the host's tailer (a separate script
that builds no path itself) finds them from the paths the follower hands it, and the local copy
lands where the records read it back.
"""

from __future__ import annotations

from pathlib import Path

from remote.api import RankEvent
from remote.records.history import rank_files
from remote.run.stream import LauncherExit, RankOwned
from trainer.event_log import EventWriter, events_path
from trainer.events import EndEvent
from trainer.run_layout import RunLayout

try:
    from runkit import tail_local_host
except ImportError:  # collected as a package
    from tests.remote.runkit import tail_local_host  # type: ignore[no-redef]


LAUNCHER_LOG = "I1121 05:27:09.878000 1 torch/distributed/elastic/api.py:553] global_ranks=[0]\n"


async def test_a_ranks_events_go_from_the_trainer_through_the_tailer_to_the_records(
        tmp_path: Path) -> None:
    run_dir, local_dir = tmp_path / "run", tmp_path / "local"
    with EventWriter(events_path(run_dir, 1)) as writer:
        writer.emit(EndEvent(t=1.0, rank=1, step=7, status="completed"))
    layout = RunLayout(run_dir)
    Path(layout.launcher_log("h")).parent.mkdir(parents=True)
    Path(layout.launcher_log("h")).write_text(LAUNCHER_LOG)
    Path(layout.host_file("h", "planned")).parent.mkdir(parents=True)
    Path(layout.host_file("h", "planned")).write_text("1\n")  # torchrun said 0: the plan wins
    Path(layout.host_file("h", "exit")).write_text("0\n")
    items = await tail_local_host(run_dir, local_dir, tmp_path)
    assert RankOwned(host="h", rank=1) in items
    ends = [i.event for i in items if isinstance(i, RankEvent)]
    assert [(e.rank, e.step) for e in ends if isinstance(e, EndEvent)] == [(1, 7)]
    assert isinstance(items[-1], LauncherExit) and items[-1].ok
    assert {rank: host for rank, (host, _) in rank_files(local_dir).items()} == {1: "h"}
    assert Path(layout.host_file("h", "ranks")).read_text() == "1\n"
