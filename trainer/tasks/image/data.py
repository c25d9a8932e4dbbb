"""The image task's datasets: synthetic images or CIFAR-10/100, held in memory on every rank.

Which of them a rank uses at a step is ``trainer.step.batch_order``'s business, not theirs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from profiles.user_errors import UsageError
from trainer.settings.run_settings import DATASETS

CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
_CIFAR_SUBDIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# Per-channel mean and std of the CIFAR-10 training images (used for both CIFARs).
_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class ImageDataset:
    """Training images (N, 3, 32, 32) and integer labels, held in memory."""

    images: torch.Tensor
    """uint8 (CIFAR, normalised per batch) or float32 (synthetic, already normalised)."""
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch_of(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels for ``indices`` (all at once)."""
        x = self.images.index_select(0, indices)
        if x.dtype == torch.uint8:
            x = (x.float().div_(255.0) - _MEAN) / _STD
        return x, self.labels.index_select(0, indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One normalised float image (3, 32, 32) and its label."""
        x = self.images[index]
        if x.dtype == torch.uint8:
            x = ((x.float().div_(255.0) - _MEAN) / _STD)[0]
        return x, self.labels[index]


def build_dataset(name: str, *, data_dir: str | None, samples: int, seed: int,
                  held_out: bool = False) -> ImageDataset:
    """The named training set, or with ``held_out`` its held-out set: CIFAR's test batch, or
    ``samples`` synthetic images drawn apart from the training ones (raises UsageError naming
    what is missing)."""
    if name == "synthetic_image":
        return synthetic_image(samples, seed, held_out=held_out)
    if name in _CIFAR_SUBDIR:
        if not data_dir:
            raise UsageError(f"--dataset {name} needs --data-dir")
        return load_cifar(name, Path(data_dir), held_out=held_out)
    raise UsageError(f"unknown --dataset {name!r}; choose one of {', '.join(DATASETS)}")


def synthetic_image(samples: int, seed: int, num_classes: int = 10, *,
                    held_out: bool = False) -> ImageDataset:
    """A learnable image set that is a pure function of ``seed``.

    Each class has a smooth random pattern (8x8 noise upsampled to 32x32); an image is its
    class's pattern plus pixel noise, so a CNN can learn the classes and the loss falls. The
    held-out set has the same patterns and its own labels and noise (another generator), so
    it never repeats a training image and the training set is the same with or without it.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, 3, 8, 8, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear",
                                               align_corners=False)
    if held_out:
        g = torch.Generator().manual_seed(seed * 1_000_003 + 999_983)
    labels = torch.randint(0, num_classes, (samples,), generator=g)
    noise = torch.randn(samples, 3, 32, 32, generator=g)
    images = patterns.index_select(0, labels) + 1.5 * noise
    return ImageDataset(images.contiguous(), labels, num_classes)


def load_cifar(name: str, data_dir: Path, *, held_out: bool = False) -> ImageDataset:
    """CIFAR-10/100 training batches (``held_out``: the test batch) from the standard
    python-pickle files in ``data_dir`` (or in its ``cifar-10-batches-py`` /
    ``cifar-100-python`` folder). No downloads."""
    expected = CIFAR10_FILES if name == "cifar10" else CIFAR100_FILES
    folder = data_dir
    if not (folder / expected[0]).is_file() and (data_dir / _CIFAR_SUBDIR[name]).is_dir():
        folder = data_dir / _CIFAR_SUBDIR[name]
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f"--data-dir {data_dir} is not a {name} directory: expected the python-version "
            f"files {', '.join(expected)} (missing: {', '.join(missing)})"
        )
    train_files = expected[:5] if name == "cifar10" else ("train",)
    if held_out:
        train_files = ("test_batch",) if name == "cifar10" else ("test",)
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for fname in train_files:
        entry = _read_batch(folder / fname, name)
        try:
            data = torch.as_tensor(entry[b"data"], dtype=torch.uint8)
            lab = torch.as_tensor(list(entry[label_key]), dtype=torch.int64)
            images.append(data.reshape(-1, 3, 32, 32))
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{folder / fname} is malformed ({type(exc).__name__}: {exc}): expected a dict "
                f"with b'data' (N x 3072 uint8) and {label_key!r}"
            ) from None
        if lab.shape[0] != images[-1].shape[0]:
            raise UsageError(f"{folder / fname} is malformed: data and labels differ in length")
        labels.append(lab)
    all_labels = torch.cat(labels)
    num_classes = 10 if name == "cifar10" else 100
    if all_labels.numel() and (all_labels.min() < 0 or all_labels.max() >= num_classes):
        raise UsageError(f"{folder} has labels outside 0..{num_classes - 1}")
    return ImageDataset(torch.cat(images).contiguous(), all_labels, num_classes)


def _read_batch(path: Path, name: str) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except Exception as exc:
        raise UsageError(
            f"{path} is not a {name} python-pickle batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(entry, dict):
        raise UsageError(f"{path} is not a {name} batch: expected a pickled dict")
    return entry
