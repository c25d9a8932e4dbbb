"""A user's script on local hosts of emulated speeds 1:2:3, set up as corral's own ranks
before it runs (ranks numbered in host order whatever order torch numbered the hosts in: the
run of test_script_resume_local.py has its master second): an unmodified TRL ``sft.py`` with a
GPU user's arguments (bf16 by default, no ``--use_cpu``), run where the trl package installed
it, completing on the CPU cluster, and a start that never reaches its first step named with the
stuck rank's stack within ``hang_limit``.

The TRL script uses the first two hosts only: what it proves (corral's precision on every CPU
rank, said once per host, and the model saved) is per rank and per host, and each rank of the
TRL script spends some 10 CPU-seconds importing transformers and TRL. The stuck-rank tests keep
three hosts: their failure names the ranks that wait for the stuck one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from remote.api import LogLine, RankEvent, RunStatus
from trainer.events import EndEvent, StartEvent

try:
    from runkit import run_processes
    from test_script_run_local import SLOWDOWNS, config, run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_run_local import (  # type: ignore[no-redef]
        SLOWDOWNS,
        config,
        run_to_end,
    )

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _starts(events: list[object]) -> dict[int, StartEvent]:
    return {e.event.rank: e.event for e in events
            if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)}


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
    # Run where the trl package installed it (inside site-packages, beside the transformers,
    # accelerate and datasets it imports): the import check takes those for installed
    # packages, not the user's own tree (issue 19's case as a user meets it).
    script = Path(trl.__file__).parent / "scripts" / "sft.py"
    if not script.is_file():
        pytest.skip("this trl ships no scripts/sft.py")
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(model), "--dataset_name", str(pairs),
            "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--report_to", "none", "--learning_rate", "1e-4"]  # bf16: SFTConfig's default
    two_hosts = SLOWDOWNS[:2]
    run_id, events = await run_to_end(config(tmp_path, script, args, slowdowns=two_hosts))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    starts = _starts(events)
    assert sorted(starts) == [0, 1]
    for start in starts.values():  # corral's precision for a CPU rank, said in its start
        assert start.precision == "fp32" and not start.exact, start
        assert "bf16 runs as fp32 on the CPU" in start.exact_note, start
    said = [e.text for e in events if isinstance(e, LogLine) and "bf16 runs as fp32" in e.text]
    assert len(said) == len(two_hosts), said  # once per host
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


async def _stuck_on_h1(tmp_path: Path, name: str, script: str) -> tuple[str, RunStatus, float]:
    """Run ``script`` (stuck on h1) with a 20 s ``hang_limit``: its run id, its final status
    (failed, naming h1's rank 1) and the seconds it took."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / name).write_text(script)
    began = time.monotonic()
    run_id, events = await run_to_end(config(tmp_path, tmp_path / "user" / name, [],
                                             hang_limit=20.0))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    return run_id, final, time.monotonic() - began


async def test_a_start_that_never_steps_is_named_with_its_stack_within_the_limit(
        tmp_path: Path) -> None:
    run_id, final, took = await _stuck_on_h1(tmp_path, "sleepy.py", SLEEPY)
    first = final.detail.splitlines()[0]
    assert "StuckRankError: no first step within 20 s" in first, first
    assert "rank 1 is in sleepy.py:9 in <module>" in first, first
    assert "ranks 0, 2 wait for it in" in first, first
    assert "time.sleep(600)" in final.detail, final.detail  # its stack, in the failure
    assert took < 120, took  # the limit, not torch's half-hour timeout
    assert run_processes(run_id) == []


GIL = """\
import ctypes
import os

import torch
import torch.distributed as dist
from torch import nn

if os.environ["CORRAL_HOST"] == "h1":
    ctypes.PyDLL(None).sleep(600)  # libc's sleep, called holding the GIL: no thread runs
dist.init_process_group("gloo")
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
torch.optim.SGD(model.parameters(), lr=0.1).step()
"""


async def test_a_stuck_rank_that_holds_the_gil_is_named_with_its_stack(tmp_path: Path) -> None:
    """Its watch thread cannot run, so it names nobody and never exits by itself: the ranks
    waiting for it name it as silent, the failure blames it (not the master), and its stack
    (faulthandler's, taken outside the interpreter) is in the failure."""
    run_id, final, took = await _stuck_on_h1(tmp_path, "gil.py", GIL)
    first = final.detail.splitlines()[0]
    assert "held up every other rank's start" in first, first
    assert "rank 1 gave no position" in first and "ranks 0, 2 wait for it" in first, first
    assert 'gil.py", line 9 in <module>' in final.detail, final.detail  # faulthandler's dump
    assert took < 150, took  # the limit and the stop's grace, not torch's half-hour timeout
    assert run_processes(run_id) == []
