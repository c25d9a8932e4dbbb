"""Checkpoints: written by rank 0 only, atomically, into ``RUN_DIR/checkpoints/``.

A checkpoint is one ``torch.save`` file ``step-<step>.pt`` holding model, optimizer, step,
epoch, data position, split, balancer state and RNG states. It is written to a temporary name,
fsynced and renamed, so a crash never leaves a half-written file under the real name; a file
that is truncated anyway (a full disk, a copy cut short) fails to load and the previous one is
used. No shared filesystem is assumed: on resume rank 0 reads the file and broadcasts it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of ``step`` goes."""
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file, newest first (complete or not)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def save_checkpoint(
    run_dir: str | os.PathLike[str], state: dict[str, Any], *, keep: int = 0
) -> Path:
    """Write ``state`` (must hold ``step``) atomically; keep only the newest ``keep`` files."""
    path = checkpoint_path(run_dir, int(state["step"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[keep:]:
            old.unlink(missing_ok=True)
    return path


def load_newest_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint that loads completely: ``(path, state, skipped)``, where
    ``skipped`` describes newer files that were unreadable; None when there is none."""
    skipped: list[str] = []
    for _, path in list_checkpoints(run_dir):
        try:
            # Our own file in our run directory; it holds plain Python state besides tensors.
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            skipped.append(f"{path.name}: {type(exc).__name__}")
            continue
        if isinstance(state, dict) and state.get("format") == FORMAT_VERSION and "model" in state:
            return path, state, skipped
        skipped.append(f"{path.name}: not a corral checkpoint")
    return None


def rng_state() -> dict[str, Any]:
    """Every random generator the training step can touch."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by ``rng_state`` (CUDA only when both sides have it)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
