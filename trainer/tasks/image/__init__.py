"""The ``image`` task: corral's own networks (``models``) on its image datasets (``data``),
classified with cross-entropy. The loss unit is one image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from profiles.user_errors import UsageError
from trainer.tasks import Task
from trainer.tasks.image.data import build_dataset
from trainer.tasks.image.models import build_model

OPTIONS = ("model", "dataset", "data_dir", "samples", "norm", "seed", "eval_samples")
"""What ``build`` reads; the trainer fills them from ``--model``, ``--dataset``, ``--data-dir``,
``--samples``, ``--norm`` (resolved), ``--seed`` and ``--eval-samples`` (None: no held-out set
for the synthetic data unless evaluation asks for one)."""
SYNTHETIC_EVAL_SAMPLES = 512
"""Held-out synthetic images made when ``--eval-every`` is given without ``--eval-samples``."""


def build(options: dict[str, Any]) -> Task:
    """The image classification task described by ``options`` (see ``OPTIONS``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"the image task has no option {', '.join(unknown)}: it is set up by "
                         "--model, --dataset, --data-dir, --samples and --norm")
    dataset = build_dataset(options["dataset"], data_dir=options.get("data_dir"),
                            samples=int(options["samples"]), seed=int(options["seed"]))
    model = build_model(options["model"], dataset.num_classes, options["norm"])
    return Task(model=model, train_data=dataset, loss=classification_loss,
                evaluate=classification_metrics, eval_data=_held_out(options))


def _held_out(options: dict[str, Any]) -> Any:
    """CIFAR's test batch, or ``eval_samples`` synthetic held-out images; None unless asked
    for (``eval_samples`` given: reading or generating them costs memory and time)."""
    name, wanted = options["dataset"], options.get("eval_samples")
    if wanted is None:
        return None
    samples = int(wanted)
    return build_dataset(name, data_dir=options.get("data_dir"), samples=samples,
                         seed=int(options["seed"]), held_out=True)


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the images of the batch, and their number."""
    images, labels = batch
    return nn.functional.cross_entropy(model(images), labels, reduction="sum"), len(labels)


def classification_metrics(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, float]:
    """Held-out sums: summed loss, correct predictions and the number of images."""
    images, labels = batch
    logits = model(images)
    return {"loss_sum": float(nn.functional.cross_entropy(logits, labels, reduction="sum")),
            "correct": float((logits.argmax(dim=1) == labels).sum()),
            "count": float(len(labels))}
