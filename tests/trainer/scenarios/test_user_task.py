"""The example user task (examples/tasks/curve.py) trains exactly under any split, and a broken
user task ends every rank with one line naming the file and line, before any collective."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from trainer_runs import REPO, check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "tasks" / "curve.py"
FLAGS = ("--task", f"{EXAMPLE}:build", "--task-option", "samples=1024", "--task-option",
         "hidden=32", "--global-batch", "64", "--steps", "20", "--lr", "0.05", "--seed", "2",
         "--momentum", "0.9")


def test_the_example_task_gives_the_same_parameters_for_any_split(tmp_path: Path) -> None:
    params = {}
    for split in ("64", "40,24", "10,30,24"):
        run_dir = tmp_path / split.replace(",", "-")
        check(launch(len(split.split(",")), *FLAGS, "--split", split, "--run-dir", str(run_dir)))
        params[split] = final_params(run_dir)
    reference = params.pop("64")
    for split, p in params.items():
        assert max_rel_diff(reference, p) <= 1e-5, split
    steps = of_kind(events(tmp_path / "64", 0), "step")
    assert sum(e["global_loss"] for e in steps[-5:]) < sum(e["global_loss"] for e in steps[:5])
    start = of_kind(events(tmp_path / "64", 0), "start")[0]
    assert start["task"] == f"{EXAMPLE}:build" and start["model"] == "curve.py:build"
    assert (tmp_path / "64" / "final" / "model.pt").is_file()  # the default save_final


def test_an_exception_in_build_ends_every_rank_naming_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from trainer.tasks import Task\n\n\ndef build(options):\n"
                      "    size = int(options['size'])\n    return Task(None, [], None)\n")
    t0 = time.monotonic()
    proc = launch(2, "--task", str(broken), "--task-option", "size=big",
                  "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode != 0
    # Our line comes first (no traceback of ours); what follows is the launcher's report.
    first = proc.stderr.splitlines()[0]
    assert first.startswith("corral trainer: invalid input: ")
    assert f"{broken}:5: ValueError: invalid literal for int()" in first
    assert time.monotonic() - t0 < 60  # nobody waited for a collective
    assert not (tmp_path / "run" / "metrics").exists()  # nothing started


EVAL_MODE_TASK = '''
import torch
from torch import nn
from trainer.tasks import Task


class TrainOnly(nn.Linear):
    """Refuses a forward in eval mode, the mode from_pretrained hands a model over in."""

    def forward(self, x):
        if not self.training:
            raise RuntimeError("forward in eval mode")
        return super().forward(x)


def build(options):
    data = [(torch.tensor([float(i)]), torch.tensor([2.0 * i])) for i in range(16)]
    return Task(model=TrainOnly(1, 1).eval(), train_data=data,
                loss=lambda model, b: (((model(b[0]) - b[1]) ** 2).sum(), len(b[1])))
'''


def test_a_model_handed_over_in_eval_mode_is_trained_in_training_mode(tmp_path: Path) -> None:
    # In eval mode transformers skips gradient checkpointing and bitsandbytes' 8-bit layers
    # take their inference path: the trainer must switch the model to training mode itself.
    task = tmp_path / "eval_mode.py"
    task.write_text(EVAL_MODE_TASK)
    run_dir = tmp_path / "run"
    check(launch(1, "--task", f"{task}:build", "--global-batch", "4", "--steps", "2",
                 "--lr", "0.001", "--run-dir", str(run_dir)))
    assert [e["step"] for e in of_kind(events(run_dir, 0), "step")] == [1, 2]


TF32_READING_TASK = '''
import torch
from torch import nn
from trainer.tasks import Task


def loss(model, batch):
    # What libraries do inside a loss (transformers' CTC loss enters cudnn.flags; inductor reads
    # the matmul precision): every TF32 getter must answer under corral's setup.
    seen = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision())
    assert seen == (False, False, "highest"), seen  # fp32 is IEEE float32
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        x, y = batch
        return ((model(x) - y) ** 2).sum(), len(y)


def build(options):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    return Task(model=nn.Linear(2, 1), train_data=torch.utils.data.TensorDataset(x, x[:, :1]),
                loss=loss)
'''


def test_a_task_whose_loss_reads_torch_s_tf32_settings_trains_in_fp32(tmp_path: Path) -> None:
    task = tmp_path / "tf32_reader.py"
    task.write_text(TF32_READING_TASK)
    check(launch(1, "--task", f"{task}:build", "--global-batch", "16", "--steps", "3",
                 "--run-dir", str(tmp_path / "run")))
    assert of_kind(events(tmp_path / "run", 0), "end")[0]["status"] == "completed"
