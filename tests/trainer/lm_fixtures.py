"""A tiny causal LM and its data for the causal_lm tests (written once per test session)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyLM:
    model: Path
    """The tiny Llama model directory (save_pretrained layout)."""
    corpus: Path
    """A .txt corpus of documents separated by blank lines."""
    pairs: Path
    """A .jsonl of prompt/completion pairs of very different lengths."""
    chats: Path
    """A .jsonl of chat ``messages`` (system, user and assistant turns)."""


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
"""A chat template for the tiny model (whose tokenizer has none)."""


def write_chats(path: Path, count: int = 48, seed: int = 2) -> None:
    """Conversations of one or two exchanges, some with a system message, of varying length."""
    rng = random.Random(seed)
    words = ("red", "blue", "cat", "river", "seven", "stone", "quiet", "song", "train", "bread")

    def said(most: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, most)))

    with path.open("w") as f:
        for _ in range(count):
            messages = [{"role": "system", "content": f"be {said(3)}"}] if rng.random() < 0.5 \
                else []
            for _ in range(rng.randint(1, 2)):
                messages += [{"role": "user", "content": said(6)},
                             {"role": "assistant", "content": said(8)}]
            f.write(json.dumps({"messages": messages}) + "\n")


def make_tiny_lm(folder: Path, shape: object = None) -> TinyLM:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from trainer.tiny_lm import write_corpus, write_pairs, write_tiny_lm

    lm = TinyLM(model=folder / "tiny-lm", corpus=folder / "corpus.txt",
                pairs=folder / "pairs.jsonl", chats=folder / "chats.jsonl")
    write_tiny_lm(lm.model, seed=0, shape=shape)  # type: ignore[arg-type]
    write_corpus(lm.corpus, documents=120, seed=0)
    write_pairs(lm.pairs)
    write_chats(lm.chats)
    return lm


def lm_flags(lm: TinyLM, *, data: Path | None = None, packing: bool = True,
             seq_len: int = 48, optimizer: str = "sgd", extra: tuple[str, ...] = ()
             ) -> list[str]:
    """Trainer flags for the causal_lm task on ``lm``.

    The split comparisons use SGD: AdamW divides by the root of each gradient's running square,
    which turns float-rounding noise on near-zero gradient entries into updates of full size
    (differences of 1e-6 to 1e-5 after 20 steps instead of 1e-7)."""
    options = [f"model={lm.model}", f"data={data or lm.corpus}", f"seq_len={seq_len}",
               "lora_r=4", "lora_alpha=8", f"packing={'true' if packing else 'false'}", *extra]
    lr = "0.01" if optimizer == "adamw" else "0.2"
    flags = ["--task", "causal_lm", "--optimizer", optimizer, "--lr", lr, "--seed", "7"]
    if optimizer == "sgd":
        flags += ["--momentum", "0.9"]
    for option in options:
        flags += ["--task-option", option]
    return flags
