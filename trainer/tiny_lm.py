"""``python -m trainer.tiny_lm --out DIR``: a tiny Llama-architecture causal language model.

A few hundred thousand parameters, randomly initialised from ``--seed``, with a byte-level
tokenizer (the 256 byte values plus ``<pad>``, ``<s>``, ``</s>``), written in the
``save_pretrained`` layout so that ``AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it. Nothing is downloaded. Tests, the LLM demo
(examples/llm.toml) and bench/llm.py use it; it needs transformers (``corral[llm]``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


@dataclass(frozen=True, kw_only=True)
class TinyLMShape:
    """The model's size (the defaults give about 240 thousand parameters)."""

    hidden_size: int = 64
    """Width of the residual stream."""
    intermediate_size: int = 176
    """Width of each MLP."""
    layers: int = 4
    """Decoder layers."""
    heads: int = 4
    """Attention heads (as many key/value heads)."""
    max_positions: int = 512
    """Longest sequence the model accepts (``max_position_embeddings``)."""


def byte_tokenizer() -> Any:
    """A byte-level tokenizer: every UTF-8 byte is one token, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for char in sorted(byte_chars):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def write_tiny_lm(out: Path, *, seed: int = 0, shape: TinyLMShape | None = None) -> int:
    """Write the model and tokenizer to ``out``; returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    shape = shape or TinyLMShape()
    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


SUBJECTS = ("the cat", "a dog", "the old fox", "my neighbour", "the small robot", "a farmer",
            "the teacher", "every bird")
VERBS = ("sees", "likes", "follows", "paints", "finds", "carries", "counts", "answers")
OBJECTS = ("the red ball", "a green hat", "the river", "seven stones", "the big tree",
           "a quiet song", "the last train", "some bread")
ENDINGS = ("in the morning", "after lunch", "near the house", "every day", "with care",
           "without a word")


def write_corpus(path: Path, *, documents: int = 200, seed: int = 0) -> int:
    """A synthetic English-like text corpus (documents separated by blank lines) that a tiny
    model can learn; a pure function of ``seed``. Returns the number of bytes written."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
                     f"{rng.choice(ENDINGS)}." for _ in range(rng.randint(2, 5))]
        docs.append(" ".join(s.capitalize() for s in sentences))
    text = "\n\n".join(docs) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return len(text.encode())


def write_pairs(path: Path, count: int = 64, seed: int = 1) -> None:
    """JSON lines of prompt/completion pairs whose lengths vary from a few to ~60 bytes (the
    Hugging Face script examples' data format); a pure function of ``count`` and ``seed``."""
    import json
    import random

    rng = random.Random(seed)
    words = ("red", "blue", "cat", "river", "seven", "stone", "quiet", "song", "train", "bread")
    with path.open("w") as f:
        for _ in range(count):
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
            completion = " ".join(rng.choice(words) for _ in range(rng.randint(1, 10)))
            f.write(json.dumps({"prompt": f"Q: {prompt}\nA:", "completion": f" {completion}"})
                    + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m trainer.tiny_lm",
        description="Write a tiny random-init Llama-architecture causal LM with a byte-level "
        "tokenizer (save_pretrained layout; no download). Needs transformers (corral[llm]).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write the model into")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--corpus", default=None,
                   help="also write a synthetic text corpus (documents separated by blank "
                   "lines) to this file, for the causal_lm task's data option")
    args = p.parse_args(argv)
    if args.corpus:
        size = write_corpus(Path(args.corpus), seed=args.seed)
        print(f"wrote a {size:,}-byte text corpus to {args.corpus}")
    try:
        count = write_tiny_lm(Path(args.out), seed=args.seed)
    except ImportError as exc:
        print(f"corral tiny_lm: {exc.name} is missing; pip install 'corral[llm]'",
              file=sys.stderr)
        return 2
    print(f"wrote a {count:,}-parameter Llama model and a byte-level tokenizer to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
