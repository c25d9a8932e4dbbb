"""The task interface: building tasks, user files and their mistakes, the checkpointer's timing
and the division by the step's global unit count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from profiles.user_errors import UsageError
from trainer.checkpoint.checkpointer import Checkpointer, load_model_state, model_state
from trainer.checkpoint.files import list_checkpoints
from trainer.event_log import EventWriter
from trainer.settings.train_config import TrainConfig
from trainer.step.batches import collated, move_to
from trainer.step.step_records import RunProgress
from trainer.step.tally import divide_by_global_units
from trainer.tasks import Task
from trainer.tasks.image.data import synthetic_image
from trainer.tasks.loader import build_task, parse_option_value, task_options


def _config(task: str, *options: str, **kwargs: Any) -> TrainConfig:
    pairs = tuple(tuple(o.split("=", 1)) for o in options)
    return TrainConfig(task=task, task_options=pairs, **kwargs)  # type: ignore[arg-type]


def test_the_image_task_collates_the_same_batch_as_the_dataset() -> None:
    task = build_task(TrainConfig(samples=64, global_batch=8))
    data = synthetic_image(64, 0)
    x, y = collated(task, [5, 1, 9], torch.device("cpu"))
    ex, ey = data.batch_of(torch.tensor([5, 1, 9]))
    assert torch.equal(x, ex) and torch.equal(y, ey)
    loss_sum, count = task.loss(task.model, (x, y))
    assert count == 3 and loss_sum.dim() == 0


def test_the_image_task_refuses_task_options() -> None:
    with pytest.raises(UsageError, match="--task-option is for causal_lm and user tasks"):
        build_task(_config("image", "lora_r=4"))


def test_option_values_are_json_when_they_parse() -> None:
    assert [parse_option_value(v) for v in ("16", "0.5", "true", "[1, 2]", "q_proj,v_proj")] \
        == [16, 0.5, True, [1, 2], "q_proj,v_proj"]
    assert task_options([("a", "1"), ("a", "2"), ("b", "x")]) == {"a": 2, "b": "x"}


USER_TASK = """
import torch
from torch import nn
from trainer.tasks import Task

def build(options):
    model = nn.Linear(2, 1)
    data = [(torch.ones(2) * i, torch.tensor([float(i)])) for i in range(int(options["n"]))]
    return Task(model=model, train_data=data,
                loss=lambda m, b: (((m(b[0]) - b[1]) ** 2).sum(), len(b[1])))
"""


def _write(tmp_path: Path, text: str, name: str = "mytask.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_user_file_builds_a_task_with_its_options(tmp_path: Path) -> None:
    path = _write(tmp_path, USER_TASK)
    task = build_task(_config(f"{path}:build", "n=6"))
    assert isinstance(task, Task) and len(task.train_data) == 6  # type: ignore[arg-type]
    # Without ":FUNCTION" the function is build.
    assert len(build_task(_config(str(path), "n=3")).train_data) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "spec", "needle"),
    [
        ("def build(options:\n    pass\n", "", "mytask.py:1: syntax error"),
        ("x = 1\n\ndef make(options):\n    return None\n", "", "has no function build(options)"
         " (it defines make)"),
        ("def build(options):\n    return 42\n", "", "returned int, not a trainer.tasks.Task"),
        ("def build(options):\n    x = {}\n    return x['missing']\n", "",
         "mytask.py:3: KeyError"),
        ("import no_such_module_here\n", "", "importing"),
        (USER_TASK, ":other", "has no function other"),
    ],
)
def test_user_mistakes_name_the_file_and_line(tmp_path: Path, text: str, spec: str,
                                              needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        build_task(_config(f"{path}{spec}", "n=2"))
    assert needle in str(err.value)
    assert str(path) in str(err.value) or "mytask.py" in str(err.value)


def test_a_missing_task_file_or_bad_spec_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        build_task(_config(str(tmp_path / "nope.py")))
    with pytest.raises(UsageError, match=r"expected image, causal_lm or FILE\.py:FUNCTION"):
        build_task(_config("imagenet"))


def test_an_empty_dataset_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, USER_TASK)
    with pytest.raises(UsageError, match="train_data is empty"):
        build_task(_config(str(path), "n=0"))


def test_gradients_become_the_mean_over_the_global_units() -> None:
    # Two "ranks" with 3 and 1 units: DDP would average their summed-loss gradients over 2;
    # dividing by the global count (4) must give the gradient of the mean over all 4 units.
    w = nn.Parameter(torch.zeros(1))
    xs = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])]
    grads = []
    for x in xs:
        w.grad = None
        ((w - x) ** 2).sum().backward()
        assert w.grad is not None
        grads.append(w.grad.clone())
    w.grad = (grads[0] + grads[1]) / 2  # what DDP's mean all-reduce leaves
    divide_by_global_units([w], world_size=2, global_units=4)
    w2 = nn.Parameter(torch.zeros(1))
    ((w2 - torch.cat(xs)) ** 2).mean().backward()
    assert w2.grad is not None and torch.allclose(w.grad, w2.grad)


def test_move_to_keeps_the_batch_structure() -> None:
    batch = {"a": torch.ones(2), "b": (torch.zeros(1), [torch.ones(1)]), "c": "text"}
    moved = move_to(batch, torch.device("cpu"))
    assert moved.keys() == batch.keys() and moved["c"] == "text"
    assert isinstance(moved["b"], tuple) and isinstance(moved["b"][1], list)


def test_the_checkpointer_decides_when_to_save(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    config = TrainConfig(run_dir=str(tmp_path), checkpoint_every=5)
    with EventWriter(tmp_path / "events.jsonl") as events:
        saver = Checkpointer(config, rank=0, world=1, events=events, model=model,
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             balancer=None)
        other = Checkpointer(config, rank=1, world=2, events=events, model=model,
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             balancer=None)
        run = RunProgress(total_steps=12, split=(4,))
        saved = []
        for step in range(1, 13):
            run.step = step
            saver.save(run)
            other.save(run)  # rank 1 never writes
            saved.append(run.checkpoint_step)
        saver.save(run, last_step=True)
        saver.save(run, last_step=True)  # already saved at this step: nothing new
    assert [step for step, _ in list_checkpoints(tmp_path)] == [12, 10, 5]
    assert saved[4] == 5 and saved[9] == 10 and run.checkpoint_step == 12


def test_frozen_parameters_stay_out_of_the_checkpoint() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    state = model_state(model)
    assert set(state) == {"1.weight", "1.bias"}
    fresh = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    fresh[0].requires_grad_(False)
    load_model_state(fresh, state)
    assert torch.equal(fresh[1].weight, model[1].weight)
    with pytest.raises(UsageError, match="does not fit the model"):
        load_model_state(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), state)
