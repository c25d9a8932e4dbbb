"""Checkpoints: written by rank 0 only, atomically, into ``RUN_DIR/checkpoints/``.

A checkpoint is one ``torch.save`` file ``step-<step>.pt`` holding model, optimizer, step,
epoch, data position, split, balancer state and RNG states. It is written to a temporary name,
fsynced and renamed, so a crash never leaves a half-written file under the real name.

Next to each file, ``step-<step>.pt.sha256`` holds the SHA-256 of its bytes (``sha256sum -c``
reads it), written and renamed before the checkpoint itself. Loading verifies it: a file that
changed after it was written (a same-size overwrite that torch would load without a word, a
truncated copy) is skipped with the reason, and the previous good one is used. When checkpoint
files exist but none passes, loading is an error naming each file and why, never a fresh start.
No shared filesystem is assumed: on resume rank 0 reads the file and broadcasts it.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import torch

from profiles.user_errors import CorralError
from trainer.disk_full import DiskFull, is_disk_full
from trainer.run_layout import CHECKPOINT_NAME, RunLayout

FORMAT_VERSION = 1
HASH_SUFFIX = ".sha256"
"""The content hash of ``step-N.pt`` is in ``step-N.pt.sha256``."""
_HASH_CHUNK = 1 << 20


class CheckpointError(CorralError):
    """Checkpoint files exist but none of them can be used: resuming would lose progress."""

    title = "no usable checkpoint"


def hash_path(path: Path) -> Path:
    """The content-hash file of checkpoint ``path``."""
    return path.with_name(path.name + HASH_SUFFIX)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(RunLayout(run_dir).path(RunLayout.CHECKPOINTS))


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of ``step`` goes."""
    return Path(RunLayout(run_dir).checkpoint(step))


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file, newest first (complete or not)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
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
    tmp_hash = path.with_name(f".{path.name}{HASH_SUFFIX}.tmp-{os.getpid()}")
    try:
        _write_files(state, path, tmp, tmp_hash)
    except (OSError, RuntimeError) as exc:  # torch's writer wraps the OSError
        if is_disk_full(exc):
            raise DiskFull(path.parent, f"the checkpoint of step {state['step']} could not be "
                           "written (the previous ones are intact)") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
        tmp_hash.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[keep:]:
            old.unlink(missing_ok=True)
            hash_path(old).unlink(missing_ok=True)
    return path


def _write_files(state: dict[str, Any], path: Path, tmp: Path, tmp_hash: Path) -> None:
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    # The hash of the bytes on disk (read back), in place before the file it vouches for.
    with open(tmp_hash, "w", encoding="ascii") as f:
        f.write(f"{file_sha256(tmp)}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_hash, hash_path(path))
    os.replace(tmp, path)


def verify_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (no hash file, or bytes that differ from the hash
    written with it); None when it is intact."""
    try:
        recorded = hash_path(path).read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return f"its content hash {hash_path(path).name} is missing or unreadable"
    try:
        actual = file_sha256(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if actual != recorded:
        return ("content hash mismatch: the file changed after it was written "
                f"(expected sha256 {recorded[:12]}..., found {actual[:12]}...)")
    return None


def load_plain(path: Path) -> Any:
    """``path`` loaded as tensors and plain data only (``weights_only=True``): a file carrying
    anything else (a callable, an object whose unpickling runs code) is refused by torch's
    restricted unpickler before any of it runs, even when its ``.sha256`` matches. Nothing is
    allowlisted: the format is dicts, lists, tuples, str, int, float, bool, None and tensors
    (``tests/trainer/test_checkpoint_safety.py``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_newest_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint that passes its content hash and loads: ``(path, state,
    skipped)``, where ``skipped`` says why each newer file was passed over. None when there is
    no checkpoint file at all; ``CheckpointError`` naming every file and why when there are
    files but none can be used."""
    skipped: list[str] = []
    found = list_checkpoints(run_dir)
    for _, path in found:
        problem = verify_checkpoint(path)
        if problem is not None:
            skipped.append(f"{path.name}: {problem}")
            continue
        try:
            state = load_plain(path)
        except Exception as exc:
            skipped.append(f"{path.name}: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        if isinstance(state, dict) and state.get("format") == FORMAT_VERSION and "model" in state:
            return path, state, skipped
        skipped.append(f"{path.name}: not a corral checkpoint")
    if found:
        raise CheckpointError(
            f"{len(found)} checkpoint file(s) in {checkpoint_dir(run_dir)} but none can be "
            "used, so resuming would start again from step 0: " + "; ".join(skipped)
            + ". Restore a good copy, or start a new run without --resume.")
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
