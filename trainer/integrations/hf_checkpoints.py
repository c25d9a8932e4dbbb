"""Which Hugging Face checkpoint a restarted script resumes from: the newest one that every rank
finished saving.

The Trainer writes a checkpoint's files straight into ``checkpoint-N``: each rank its RNG state,
rank 0 the model, optimizer, scheduler and trainer state. A rank stopped while saving (killed,
its host lost, or stopped by corral because another rank failed) leaves a folder that looks like
any other, which ``get_last_checkpoint`` picks and which then cannot be loaded (a torch file cut
short: ``OSError: [Errno 22] Invalid argument``), so every restart fails the same way.

Run by corral, each rank marks a checkpoint once it has saved its part (``mark_saved``, from the
opt-in's ``on_save``). On resume the ranks agree (``complete``) on the newest checkpoint, at or
before the one asked for, that every rank which saved checkpoints there has marked. Where no
rank has marked any checkpoint (all saved before the opt-in, or without corral) the one asked for
is taken as it is: nothing tells a finished checkpoint from a cut one there.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

MARKER = ".corral-saved-rank-{rank}"
"""The file a rank leaves in a checkpoint folder once it has saved its part of it."""

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class SavedHere:
    """What one rank finds in its own checkpoints folder (a host's disk may be its own)."""

    asked: int
    """The step of the checkpoint this rank was asked to resume from."""
    marked: tuple[int, ...]
    """The steps of the checkpoints this rank marked as saved."""
    saved_any: bool
    """Whether this rank's folder holds any checkpoint (a rank that saved none there, as on a
    host of its own with ``save_only_model``, says nothing about them)."""


def step_of(path: Path) -> int | None:
    """N of a ``checkpoint-N`` folder; None for any other name."""
    match = _CHECKPOINT.fullmatch(path.name)
    return int(match[1]) if match else None


def mark_saved(checkpoint: str, rank: int) -> None:
    """Mark ``checkpoint`` as saved by ``rank`` (once its own files are written)."""
    folder = Path(checkpoint)
    if folder.is_dir():
        (folder / MARKER.format(rank=rank)).touch()


def saved_here(asked: Path, rank: int) -> SavedHere:
    """What ``rank`` finds beside ``asked`` (a ``checkpoint-N`` folder)."""
    step = step_of(asked)
    assert step is not None
    folders = {found: path for path in asked.parent.glob("checkpoint-*")
               if path.is_dir() and (found := step_of(path)) is not None}
    marked = tuple(sorted(found for found, path in folders.items()
                          if (path / MARKER.format(rank=rank)).exists()))
    return SavedHere(asked=step, marked=marked, saved_any=bool(folders))


def complete(asked: str | None, rank: int,
             gather: Callable[[SavedHere | None], list[SavedHere | None]]) -> str | None:
    """The checkpoint to resume from in place of ``asked``: ``asked`` itself when every rank
    finished saving it (or no rank marks checkpoints), else the newest older one every rank
    finished, else None (none did: the run starts over). Every rank calls this together, what
    it asked for a checkpoint or not: ``gather`` collects what each finds (``saved_here``)."""
    path = Path(asked) if asked is not None else None
    mine = saved_here(path, rank) if path is not None and step_of(path) is not None else None
    views = [view for view in gather(mine) if view is not None]
    if path is None or mine is None or not any(view.marked for view in views):
        return asked
    newest = min(view.asked for view in views)
    finished = set.intersection(*(set(view.marked) for view in views if view.saved_any))
    usable = [step for step in finished if step <= newest]
    if not usable:
        return None
    best = max(usable)
    return asked if best == mine.asked else str(path.parent / f"checkpoint-{best}")


def finished_checkpoint(asked: str | None, rank: int) -> str | None:
    """``asked``, or the newest checkpoint before it that every rank finished saving
    (``hf_checkpoints``), said on rank 0 when it is not ``asked``."""
    def gather(view: SavedHere | None) -> list[SavedHere | None]:
        if not (dist.is_available() and dist.is_initialized()):
            return [view]
        views: list[SavedHere | None] = [None] * dist.get_world_size()
        dist.all_gather_object(views, view)
        return views

    chosen = complete(asked, rank, gather)
    if chosen != asked and rank == 0:
        print(f"corral: {asked} was not saved by every rank (one was stopped while saving it); "
              f"resuming from {chosen or 'the start'}", file=sys.stderr, flush=True)
    return chosen
