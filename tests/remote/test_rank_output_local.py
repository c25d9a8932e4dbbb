"""The field's progress bars over real ranks (three local hosts, torchrun's tee, corral's
tailer and follower): every bar one line per rank at its last state in ``corral logs`` and
the follower's stream, the rank that raised mid-bar leaves its bar where it stopped, and no
line carries torchrun's prefix or is glued to another."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from remote.api import LogLine, RunStatus, culprit_line, local_run_dir, run_log_lines
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.records.history import load_history
from remote.records.summary import summarize

try:
    from runkit import run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_to_end  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(importlib.util.find_spec("tqdm") is None,
                                 reason="tqdm is not installed")]

BARS = """\
import sys, time
import torch, torch.distributed as dist
from tqdm import tqdm

dist.init_process_group("gloo")
rank = dist.get_rank()
for epoch in range(2):
    bar = tqdm(range(20), desc=f"epoch {epoch} rank {rank}", mininterval=0)
    for i in bar:
        dist.barrier()
        time.sleep(0.02)
        if rank == 1 and epoch == 1 and i == 10:
            raise ValueError("bad batch 10 on rank 1")
    bar.close()
    print(f"rank {rank}: epoch {epoch} finished", flush=True)
dist.destroy_process_group()
"""
"""The field's ``progress_bars.py --crash``, shorter: a tqdm bar per rank and epoch."""


def config(tmp_path: Path) -> ClusterConfig:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "train.py").write_text(BARS)
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
                  for i in range(3))
    return ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="bars", master="h0", run_root=str(tmp_path / "runs")),
        hosts=hosts, run=RunSection(script=str(tmp_path / "user" / "train.py")))


async def test_bars_over_real_ranks_are_one_line_each_at_their_last_state(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    run_id, events = await run_to_end(cfg)
    assert isinstance(events[-1], RunStatus) and events[-1].state == "failed"
    streamed = [e for e in events if isinstance(e, LogLine) and e.rank is not None]
    # torch's own "[rankN]: " before a rank's traceback lines is the rank's text; corral's
    # prefix ("[rankN+M]:") is never left in one, at its start or glued inside
    glued = [e.text for e in streamed if re.search(r"\[rank\d+\+\d+\]:", e.text)]
    assert streamed and glued == []
    lines = run_log_lines(local_run_dir(cfg, run_id), [h.name for h in cfg.hosts])
    bars = [line for line in lines if "%|" in line.text]
    assert sorted((line.rank, line.text.split(":")[0]) for line in bars) == sorted(
        [(r, f"epoch 0 rank {r}") for r in range(3)]
        + [(r, f"epoch 1 rank {r}") for r in range(3)])
    assert all("20/20" in line.text for line in bars if "epoch 0" in line.text)
    crashed = next(line for line in bars if line.text.startswith("epoch 1 rank 1"))
    assert "10/20" in crashed.text  # where rank 1 raised
    assert {line.text for line in lines if line.rank == 1 and "finished" in line.text} == {
        "rank 1: epoch 0 finished"}  # its own line, not glued after a bar
    assert any("ValueError: bad batch 10 on rank 1" in line.text for line in lines)
    # The culprit, not the victim (issue 79): rank 1 raised, ranks 0 and 2 only lost their
    # peer. The first status that names a failed rank (the header's, the notice's) names it,
    # and so do the record (``corral report``) and the line ``corral logs --failure`` opens.
    naming = [e for e in events if isinstance(e, RunStatus) and e.failed_host is not None]
    assert naming and (naming[0].failed_host, naming[0].failed_rank) == ("h1", 1), naming[:1]
    raised = next(e for e in streamed if "ValueError: bad batch 10" in e.text)
    print(f"culprit named {naming[0].t - raised.t:.2f} s after its error line")  # the report's
    outcome = summarize(load_history(local_run_dir(cfg, run_id)))[0].outcome
    assert (outcome.failed_host, outcome.failed_rank) == ("h1", 1), outcome
    opened = culprit_line(lines, "h1", 1)
    assert opened is not None and (lines[opened].host, lines[opened].rank) == ("h1", 1)
