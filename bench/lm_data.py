"""The tiny model and a prompt/completion file for the script benchmarks (written locally)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from trainer.tiny_lm import write_tiny_lm

WORDS = ("red", "blue", "cat", "river", "seven", "stone", "quiet", "song", "train", "bread")


def tiny_model_and_pairs(folder: Path, count: int = 512) -> tuple[Path, Path]:
    """``(model directory, pairs.jsonl)`` under ``folder``: pairs of varied lengths."""
    model, pairs = folder / "tiny-lm", folder / "pairs.jsonl"
    write_tiny_lm(model, seed=0)
    rng = random.Random(1)
    with pairs.open("w") as f:
        for _ in range(count):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10)))
            f.write(json.dumps({"prompt": f"Q: {prompt}\nA:", "completion": f" {answer}"})
                    + "\n")
    return model, pairs
