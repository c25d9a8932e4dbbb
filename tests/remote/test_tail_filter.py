"""What the tail of a host shows: rank output, warnings and errors; torch's INFO chatter only
marked as noise (the front ends hide it until asked)."""

from __future__ import annotations

from pathlib import Path

from remote.api import LogLine
from remote.run.stream import LauncherExit, RankOwned
from trainer.launch_contract import LOG_LINE_PREFIX, line_rank, log_line_prefix

try:
    from runkit import tail_local_host
except ImportError:  # collected as a package
    from tests.remote.runkit import tail_local_host  # type: ignore[no-redef]

LAUNCHER_LOG = """\
I1121 05:27:09.671000 20394 torch/distributed/launcher/api.py:254] Starting elastic_operator
I1121 05:27:09.878000 20394 torch/distributed/elastic/agent/server/api.py:553]   global_ranks=[0, 1]
I1121 05:27:09.878000 20394 torch/distributed/elastic/agent/server/api.py:715] Starting worker group
[rank0]:I1121 05:27:10.100000 20400 torch/distributed/distributed_c10d.py:1] Added key: x
[rank1]:INFO:torch.distributed.distributed_c10d:Rank 1: Completed store-based barrier
[rank0]:step 1 loss 2.30
[rank1]:RuntimeError: Gloo connectFullMesh failed
W1121 05:27:11.000000 20394 elastic/multiprocessing/api.py:1028] Sending process 1 SIGTERM
E1121 05:27:11.100000 20394 elastic/multiprocessing/api.py:900] failed (exitcode: 1)
"""


async def test_routine_info_lines_are_kept_in_the_copy_and_marked_noise(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs" / "h").mkdir(parents=True)
    (run_dir / "hosts").mkdir()
    (run_dir / "logs" / "h" / "launcher.log").write_text(LAUNCHER_LOG)
    (run_dir / "hosts" / "h.exit").write_text("1\n")  # the launcher ended: the tail ends too
    items = await tail_local_host(run_dir, tmp_path / "local", tmp_path)

    lines = [i for i in items if isinstance(i, LogLine)]
    shown = [(i.rank, i.text) for i in lines if not i.noise]
    assert shown == [
        (0, "step 1 loss 2.30"),
        (1, "RuntimeError: Gloo connectFullMesh failed"),
        (None, LAUNCHER_LOG.splitlines()[-2]),
        (None, LAUNCHER_LOG.splitlines()[-1]),
    ]
    noise = [i.text for i in lines if i.noise]
    assert noise == [line.split("]:", 1)[-1] for line in LAUNCHER_LOG.splitlines()[:5]]
    # The rendezvous result still tells which ranks run here; the copy keeps every line.
    assert sorted(i.rank for i in items if isinstance(i, RankOwned)) == [0, 1]
    assert isinstance(items[-1], LauncherExit) and items[-1].status == "1"
    copied = tmp_path / "local" / "collected" / "h" / "logs" / "h" / "launcher.log"
    assert copied.read_text() == LAUNCHER_LOG


def test_launcher_prefix_reads_back_as_the_global_rank() -> None:
    # torchrun fills ``${local_rank}`` into the template the launcher sets; the follower reads
    # the global rank (host's first rank + local rank) back from the line.
    template = log_line_prefix(first_rank=5)
    line = template.replace("${local_rank}", "2") + "step 1 loss 2.30"
    match = LOG_LINE_PREFIX.match(line)
    assert match is not None and line_rank(match) == 7
    assert line[match.end():] == "step 1 loss 2.30"
