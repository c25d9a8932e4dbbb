"""Ranks numbered in host order reach the stream, whatever order torch gave the nodes: the
tailer reports the planned ranks, rank output lines and torch's failure summary map to them."""

from __future__ import annotations

from pathlib import Path

from remote.api import LogLine
from remote.run.monitor import RunMonitor
from remote.run.stream import LauncherExit, RankOwned

try:
    from runkit import tail_local_host
except ImportError:  # collected as a package
    from tests.remote.runkit import tail_local_host  # type: ignore[no-redef]

# torch put this host's node second (global rank 1); the launch planned rank 0 for it.
LAUNCHER_LOG = """\
I1121 05:27:09.878000 20394 torch/distributed/elastic/agent/server/api.py:553]   global_ranks=[1]
[rank0+0]:step 1 loss 2.30
"""


async def test_the_tailer_reports_the_planned_ranks_and_their_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs" / "h").mkdir(parents=True)
    (run_dir / "hosts").mkdir()
    (run_dir / "metrics").mkdir()
    (run_dir / "logs" / "h" / "launcher.log").write_text(LAUNCHER_LOG)
    (run_dir / "hosts" / "h.planned").write_text("0\n")
    (run_dir / "metrics" / "rank-1.jsonl").write_text("not this host's\n")
    (run_dir / "hosts" / "h.exit").write_text("0\n")
    items = await tail_local_host(run_dir, tmp_path / "local", tmp_path)
    assert [i.rank for i in items if isinstance(i, RankOwned)] == [0]
    assert [(i.rank, i.text) for i in items if isinstance(i, LogLine) and not i.noise] == [
        (0, "step 1 loss 2.30")]
    assert isinstance(items[-1], LauncherExit)


def test_torchs_root_cause_rank_is_mapped_to_the_hosts_own_rank() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    monitor.observe(RankOwned(host="b", rank=0))
    monitor.observe(RankOwned(host="b", rank=1))
    monitor.observe(RankOwned(host="a", rank=2))
    # torch's node order put b second: its local rank 1 is torch's rank 3, our rank 1.
    for line in ("Root Cause (first observed failure):", "  rank      : 3 (local_rank: 1)",
                 "  exitcode  : -9 (pid: 42)"):
        monitor.observe(LogLine(t=1.0, host="b", rank=None, text=line))
    monitor.observe(LauncherExit(t=2.0, host="b", status="1"))
    final = monitor.finding()
    assert (final.failed_host, final.failed_rank) == ("b", 1)
