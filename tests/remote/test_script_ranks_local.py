"""A user's script on three local hosts of emulated speeds 1:2:3, set up as corral's own ranks
before it runs: ranks numbered in host order every time, an unmodified TRL ``sft.py`` with a GPU
user's arguments (bf16 by default, no ``--use_cpu``) completing on the CPU cluster, and a start
that never reaches its first step named with the stuck rank's stack within ``hang_limit``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from remote.api import LogLine, RankEvent, RunStatus
from trainer.events import EndEvent, StartEvent

try:
    from runkit import run_processes
    from test_script_run_local import SCRIPTS, SLOWDOWNS, config, data, hf_args, run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.test_script_run_local import (  # type: ignore[no-redef]
        SCRIPTS,
        SLOWDOWNS,
        config,
        data,
        hf_args,
        run_to_end,
    )

__all__ = ["data"]  # the tiny model's fixture, shared with test_script_run_local

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _starts(events: list[object]) -> dict[int, StartEvent]:
    return {e.event.rank: e.event for e in events
            if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)}


async def test_script_ranks_follow_the_host_order_every_time(tmp_path: Path) -> None:
    for attempt in range(3):  # the three hosts meet torch's rendezvous in varying order
        folder = tmp_path / f"try{attempt}"
        cfg = config(folder, SCRIPTS / "ddp_tutorial.py",
                     ["--epochs", "1", "--samples", "96", "--batch-size", "12"])
        run_id, events = await run_to_end(cfg)
        final = events[-1]
        assert isinstance(final, RunStatus) and final.state == "completed", final
        starts = _starts(events)
        # each host's emulated slowdown reaches only its own ranks: rank r ran on host r
        assert {r: s.slowdown for r, s in starts.items()} == dict(enumerate(SLOWDOWNS)), starts
        assert run_processes(run_id) == []


ON_ITS_OWN_DISK = """\
import os
import runpy
import sys
from pathlib import Path

# The local hosts share one disk: each writes below a folder named after its host instead, as
# if each had its own. Then the Hugging Face example runs as the user wrote it.
at = sys.argv.index("--out") + 1
sys.argv[at] = str(Path(sys.argv[at]) / os.environ["CORRAL_HOST"])
sys.argv[0] = str(Path(__file__).with_name("hf_trainer.py"))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


async def test_an_hf_scripts_rank_0_writes_the_model_on_the_master(
        data: tuple[Path, Path], tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(SCRIPTS / "hf_trainer.py", user)
    (user / "on_its_own_disk.py").write_text(ON_ITS_OWN_DISK)
    out = tmp_path / "out"
    run_id, events = await run_to_end(config(tmp_path, user / "on_its_own_disk.py",
                                             hf_args(data, out, 3)))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    rank_hosts = {e.event.rank: e.host for e in events
                  if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)}
    assert rank_hosts == {0: "h0", 1: "h1", 2: "h2"}, rank_hosts  # rank 0 on the master
    # The Trainer saves on its process zero: the master's, and no other host writes a model.
    assert (out / "h0" / "final" / "adapter_model.safetensors").is_file()
    for host in ("h1", "h2"):
        assert not list((out / host).rglob("*.safetensors")), host
    assert run_processes(run_id) == []


def _sft_data(folder: Path) -> tuple[Path, Path]:
    pytest.importorskip("trl")
    from trainer.tiny_lm import write_pairs, write_tiny_lm

    write_tiny_lm(folder / "tiny-lm", seed=0)
    (folder / "pairs").mkdir()
    write_pairs(folder / "pairs" / "train.jsonl")
    return folder / "tiny-lm", folder / "pairs"


async def test_trls_own_sft_script_with_gpu_arguments_completes_on_cpu_hosts(
        tmp_path: Path) -> None:
    import trl

    model, pairs = _sft_data(tmp_path)
    (tmp_path / "user").mkdir()
    script = shutil.copy(Path(trl.__file__).parent / "scripts" / "sft.py", tmp_path / "user")
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(model), "--dataset_name", str(pairs),
            "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--report_to", "none", "--learning_rate", "1e-4"]  # bf16: SFTConfig's default
    run_id, events = await run_to_end(config(tmp_path, Path(script), args))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    starts = _starts(events)
    assert sorted(starts) == [0, 1, 2]
    for start in starts.values():  # corral's precision for a CPU rank, said in its start
        assert start.precision == "fp32" and not start.exact, start
        assert "bf16 runs as fp32 on the CPU" in start.exact_note, start
    said = [e.text for e in events if isinstance(e, LogLine) and "bf16 runs as fp32" in e.text]
    assert len(said) == len(SLOWDOWNS), said  # once per host
    assert (out / "model.safetensors").is_file() or (out / "adapter_model.safetensors").is_file()
    ends = [e.event for e in events if isinstance(e, RankEvent) and isinstance(e.event, EndEvent)]
    assert {e.status for e in ends} == {"completed"} and {e.step for e in ends} == {3}
    assert run_processes(run_id) == []


SLEEPY = """\
import os
import time

import torch
import torch.distributed as dist
from torch import nn

if os.environ["CORRAL_HOST"] == "h1":
    time.sleep(600)  # a rank held up before it joins its process group
dist.init_process_group("gloo")
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
torch.optim.SGD(model.parameters(), lr=0.1).step()
"""


async def test_a_start_that_never_steps_is_named_with_its_stack_within_the_limit(
        tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "sleepy.py").write_text(SLEEPY)
    limit = 20.0
    began = time.monotonic()
    run_id, events = await run_to_end(config(tmp_path, tmp_path / "user" / "sleepy.py", [],
                                             hang_limit=limit))
    took = time.monotonic() - began
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    first = final.detail.splitlines()[0]
    assert "StuckRankError: no first step within 20 s" in first, first
    assert "rank 1 is in sleepy.py:9 in <module>" in first, first
    assert "ranks 0, 2 wait for it in" in first, first
    assert "time.sleep(600)" in final.detail, final.detail  # its stack, in the failure
    assert took < 120, took  # the limit, not torch's half-hour timeout
    assert run_processes(run_id) == []
