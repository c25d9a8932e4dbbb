"""Data: deterministic synthetic images, CIFAR pickles, and the exact global-batch order."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from profiles.user_errors import UsageError
from trainer.step.batch_order import GlobalBatchOrder
from trainer.tasks.image.data import build_dataset, load_cifar, synthetic_image


def test_synthetic_images_are_a_function_of_the_seed() -> None:
    a, b, c = synthetic_image(64, 7), synthetic_image(64, 7), synthetic_image(64, 8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (64, 3, 32, 32) and a.num_classes == 10


@pytest.mark.parametrize("split", [(32,), (24, 8), (20, 8, 4), (4, 8, 20), (1, 30, 1)])
def test_ranks_together_take_exactly_the_global_batch(split: tuple[int, ...]) -> None:
    order = GlobalBatchOrder(num_samples=100, global_batch=32, seed=1)
    assert order.steps_per_epoch == 3  # 100 // 32: the partial batch is dropped
    seen_epoch: list[int] = []
    for step in range(1, 7):  # steps are numbered from 1
        parts = [order.local_indices(step, split, r) for r in range(len(split))]
        assert [len(p) for p in parts] == list(split)
        joined = torch.cat(parts)
        epoch, pos = divmod(step - 1, 3)
        assert order.epoch_of(step) == epoch
        assert torch.equal(joined, order.permutation(epoch)[pos * 32 : pos * 32 + 32])
        if epoch == len(seen_epoch):
            seen_epoch.append(epoch)
    # Each epoch visits distinct samples, and epochs are shuffled differently.
    e0 = torch.cat([torch.cat([order.local_indices(s, split, r) for r in range(len(split))])
                    for s in range(1, 4)])
    assert len(set(e0.tolist())) == 96
    assert not torch.equal(order.permutation(0), order.permutation(1))


def _write(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj))


def _cifar10(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write(folder / f"data_batch_{i}", {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        })
    _write(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    _write(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})


def test_cifar10_reads_the_five_training_batches(tmp_path: Path) -> None:
    _cifar10(tmp_path / "cifar-10-batches-py")
    ds = build_dataset("cifar10", data_dir=str(tmp_path), samples=0, seed=0)  # parent dir works
    assert len(ds) == 20 and ds.num_classes == 10
    x, y = ds.batch_of(torch.tensor([0, 19]))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32) and y.dtype == torch.int64
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert torch.equal(ds.images[0].reshape(-1), torch.as_tensor(raw[b"data"][0]))


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tmp_path.mkdir(exist_ok=True)
    _write(tmp_path / "train", {b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
                                b"fine_labels": [0, 99, 5, 7, 50, 1],
                                b"coarse_labels": [0, 1, 2, 3, 4, 5]})
    _write(tmp_path / "test", {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [3]})
    _write(tmp_path / "meta", {b"fine_label_names": []})
    ds = load_cifar("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.labels.tolist() == [0, 99, 5, 7, 50, 1]


def test_a_missing_cifar_file_is_named(tmp_path: Path) -> None:
    _cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(UsageError, match="missing: data_batch_3") as err:
        load_cifar("cifar10", tmp_path / "c")
    assert "data_batch_1, data_batch_2" in str(err.value)  # lists every expected file


def test_a_malformed_cifar_batch_is_reported(tmp_path: Path) -> None:
    _cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="data_batch_2 is not a cifar10 python-pickle batch"):
        load_cifar("cifar10", tmp_path / "c")
    _write(tmp_path / "c" / "data_batch_2", {b"data": np.zeros((3, 100), np.uint8),
                                             b"labels": [0, 0, 0]})
    with pytest.raises(UsageError, match="data_batch_2 is malformed"):
        load_cifar("cifar10", tmp_path / "c")
