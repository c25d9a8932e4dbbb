"""A plain script that resumes its optimizer through torch's distributed checkpoint
(pytorch/examples' FSDP2 example, on its second run) has its steps and samples counted as
on its first: the optimizer-state set-up step torch makes at lr 0 before the first forward
(``set_optimizer_state_dict``) is no step of the script's, and the samples of the real ones
are still counted (before, 11 steps of 0 samples: local batch 0 in the report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.events import StepEvent

try:
    from test_plain_events import events_of, run_plain
except ImportError:  # collected as a package
    from tests.trainer.scenarios.test_plain_events import events_of, run_plain  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

RESUMES = """\
import torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
dist.init_process_group("gloo")
model = torch.nn.Linear(8, 1)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
saved = get_optimizer_state_dict(model, opt)  # as a checkpoint loaded back would be
set_optimizer_state_dict(model, opt, saved)
for step in range(3):
    model(torch.randn(6, 8)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
dist.destroy_process_group()
"""


def test_a_resumed_optimizers_set_up_step_is_not_counted(tmp_path: Path) -> None:
    done, run_dir = run_plain(tmp_path, RESUMES, [])
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        steps = [e for e in events_of(run_dir, rank) if isinstance(e, StepEvent)]
        assert [e.step for e in steps] == [1, 2, 3]
        assert {e.local_batch for e in steps} == {6}
