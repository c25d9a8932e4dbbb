"""The tiny model and a prompt/completion file for the script benchmarks (written locally)."""

from __future__ import annotations

from pathlib import Path

from trainer.tiny_lm import write_pairs, write_tiny_lm


def tiny_model_and_pairs(folder: Path, count: int = 512) -> tuple[Path, Path]:
    """``(model directory, pairs.jsonl)`` under ``folder``: pairs of varied lengths."""
    model, pairs = folder / "tiny-lm", folder / "pairs.jsonl"
    write_tiny_lm(model, seed=0)
    write_pairs(pairs, count=count)
    return model, pairs
