"""Checkpoints load as tensors and plain data only (issue 41 item 6): a step file carrying a
callable, even with a matching ``.sha256``, is refused and nothing in it runs; corral's own
checkpoint (model, optimizer, balancer, generators, identity) loads under that rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trainer.checkpoint.files import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    file_sha256,
    hash_path,
    load_newest_checkpoint,
    rng_state,
    save_checkpoint,
)


class RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_a_callable_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = checkpoint_path(tmp_path, 5)
    path.parent.mkdir(parents=True)
    torch.save({"format": FORMAT_VERSION, "step": 5, "model": {"w": torch.ones(3)},
                "payload": RunsCode(marker)}, path)
    hash_path(path).write_text(f"{file_sha256(path)}  {path.name}\n", encoding="ascii")
    with pytest.raises(CheckpointError) as refused:
        load_newest_checkpoint(tmp_path)
    assert not marker.exists(), "the checkpoint's code ran"
    assert path.name in refused.value.message and "Unpickling" in refused.value.message


def test_corrals_own_checkpoint_loads_as_plain_data(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, {
        "step": 7, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "split": [3, 5], "policy": "auto", "rng": rng_state(), "balancer": None,
        "run": {"task": "image", "seed": 1}, "training": {"best": (1.5, 2)}})
    found = load_newest_checkpoint(tmp_path)
    assert found is not None
    _, state, skipped = found
    assert skipped == [] and state["step"] == 7
    assert torch.equal(state["model"]["weight"], model.state_dict()["weight"])
    assert isinstance(state["rng"]["python"], tuple) and torch.is_tensor(state["rng"]["torch"])
