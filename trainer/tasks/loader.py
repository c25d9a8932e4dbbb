"""Build the run's task from ``--task`` and ``--task-option`` (before any collective).

``--task image`` (the default) builds corral's image task from ``--model``/``--dataset``/...;
``--task causal_lm`` imports transformers and peft (only then); ``--task FILE.py:FUNCTION``
imports the user's file. Whatever goes wrong is a ``UsageError`` naming what to fix.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from profiles.user_errors import CorralError, UsageError
from trainer.settings.train_config import TrainConfig, split_task_spec
from trainer.tasks import BUILTIN_TASKS, Task
from trainer.tasks.image import SYNTHETIC_EVAL_SAMPLES
from trainer.tasks.user import describe_exception, load_builder


def parse_option_value(text: str) -> Any:
    """A ``--task-option`` value: JSON when it parses (``16``, ``0.5``, ``true``, ``[1, 2]``),
    else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def task_options(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``--task-option KEY=VALUE`` pairs as a dict (a later KEY wins)."""
    return {key: parse_option_value(value) for key, value in pairs}


def build_task(config: TrainConfig) -> Task:
    """The run's task, checked; call after seeding torch so every rank builds the same model."""
    options = task_options(config.task_options)
    if config.task == "image":
        if options:
            raise UsageError("--task-option is for causal_lm and user tasks; the image task "
                             "is set up by --model, --dataset, --data-dir, --samples, --norm")
        options = {"model": config.model, "dataset": config.dataset,
                   "data_dir": config.data_dir, "samples": config.samples,
                   "norm": config.resolved_norm, "seed": config.seed,
                   "eval_samples": (config.eval_samples or SYNTHETIC_EVAL_SAMPLES)
                   if config.eval_every else None}
    if config.task == "causal_lm" and config.eval_data is not None:
        options = {**options, "eval_data": config.eval_data}
    if config.task in BUILTIN_TASKS:
        module = importlib.import_module(f"trainer.tasks.{config.task}")
        return check_task(module.build(options), f"the {config.task} task")
    path, function = split_task_spec(config.task)
    builder = load_builder(path, function)
    try:
        task = builder(options)
    except CorralError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}:{function} failed: {describe_exception(exc, path)}") from None
    return check_task(task, f"{path}:{function}")


def check_task(task: object, source: str) -> Task:
    """``task`` if it is a usable Task, else a UsageError naming ``source``."""
    if not isinstance(task, Task):
        raise UsageError(f"{source} returned {type(task).__name__}, not a trainer.tasks.Task")
    data = task.train_data
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise UsageError(f"{source}: train_data needs __len__ and __getitem__ "
                         f"(got {type(data).__name__})")
    if len(data) == 0:
        raise UsageError(f"{source}: train_data is empty")
    if not callable(task.loss):
        raise UsageError(f"{source}: loss must be a function loss(model, batch)")
    return task


def task_label(config: TrainConfig) -> tuple[str, str]:
    """``(model, dataset)`` as the start event and the console name them."""
    if config.task == "image":
        return config.model, config.dataset
    options = task_options(config.task_options)
    if config.task in BUILTIN_TASKS:
        return (str(options.get("model", config.task)),
                Path(str(options.get("data", "-"))).name)
    path, function = split_task_spec(config.task)
    return f"{path.name}:{function}", str(options.get("data", "-"))
