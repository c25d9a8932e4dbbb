"""Figures for every kind of plain script: an FSDP2 model (``fully_shard`` on each layer and
the root, no DDP module) has its samples counted from the first forward's batch, never 0; a
script that leaves its process group and ends without an optimizer step (an evaluation)
ends completed, its end event written without the group."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.events import EndEvent, StepEvent

try:
    from test_plain_events import events_of, run_plain
except ImportError:  # collected as a package
    from tests.trainer.scenarios.test_plain_events import events_of, run_plain  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

FSDP2 = """\
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
dist.init_process_group("gloo")
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
for layer in model:
    if isinstance(layer, torch.nn.Linear):
        fully_shard(layer)
fully_shard(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(4):
    for _ in range(2):  # accumulation: both micro-batches count
        model(torch.randn(6, 8)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
dist.destroy_process_group()
"""


def test_an_fsdp2_scripts_samples_are_counted(tmp_path: Path) -> None:
    done, run_dir = run_plain(tmp_path, FSDP2, [])
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        steps = [e for e in events_of(run_dir, rank) if isinstance(e, StepEvent)]
        assert [e.step for e in steps] == [1, 2, 3, 4]
        assert {e.local_batch for e in steps} == {12}  # 2 × 6, the root's calls only


EVALUATES = """\
import torch.distributed as dist
dist.init_process_group("gloo")
print("accuracy 0.93", flush=True)
dist.destroy_process_group()
"""


def test_a_script_that_leaves_its_group_before_any_step_ends_completed(tmp_path: Path) -> None:
    done, run_dir = run_plain(tmp_path, EVALUATES, [])
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        end = events_of(run_dir, rank)[-1]
        assert isinstance(end, EndEvent) and end.status == "completed" and end.step == 0, end
