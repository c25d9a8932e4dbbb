"""Language-model training data: documents and prompt/completion pairs, tokenized, packed into
``seq_len`` sequences or padded per batch.

An example is ``(input_ids, labels)``: ``labels`` is the token itself where the model must
predict it and ``IGNORE`` where it must not (prompts, padding). The loss is summed over the
predicted tokens and divided by their global count, so padding never counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from profiles.user_errors import UsageError

IGNORE = -100
"""The label of a token that is not predicted (cross_entropy's ignore_index)."""

Tokenize = Callable[[str], list[int]]
Example = tuple[list[int], list[int]]


def read_examples(path: Path) -> list[dict[str, str]]:
    """``.txt``: documents separated by blank lines (``{"text": ...}``); ``.jsonl``: one object
    per line with ``text``, or ``prompt`` and ``completion``."""
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read data file {path}: {exc}") from None
    if path.suffix == ".jsonl":
        rows = [_jsonl_row(path, n, line) for n, line in enumerate(text.splitlines(), 1)
                if line.strip()]
    elif path.suffix == ".txt":
        rows = [{"text": doc.strip()} for doc in text.split("\n\n") if doc.strip()]
    else:
        raise UsageError(f"data file {path}: expected a .txt or .jsonl file")
    if not rows:
        raise UsageError(f"data file {path} is empty")
    return rows


def _jsonl_row(path: Path, number: int, line: str) -> dict[str, str]:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if isinstance(row.get("text"), str):
        return {"text": row["text"]}
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return {"prompt": row["prompt"], "completion": row["completion"]}
    raise UsageError(f"{where}: no \"text\" field (or \"prompt\" and \"completion\") holding "
                     f"a string; found keys {', '.join(sorted(row)) or 'none'}")


def tokenize_examples(rows: Sequence[dict[str, str]], tokenize: Tokenize, bos: int | None,
                      eos: int | None) -> list[Example]:
    """Token ids and labels per example: all of a text is predicted; of a prompt/completion
    pair only the completion (and the end-of-sequence token)."""
    head = [bos] if bos is not None else []
    tail = [eos] if eos is not None else []
    out: list[Example] = []
    for row in rows:
        if "text" in row:
            ids = head + tokenize(row["text"]) + tail
            out.append((ids, list(ids)))
        else:
            prompt = head + tokenize(row["prompt"])
            completion = tokenize(row["completion"]) + tail
            out.append((prompt + completion, [IGNORE] * len(prompt) + completion))
    return out


class PackedSequences:
    """Every example concatenated and cut into sequences of exactly ``seq_len`` tokens (the
    last partial one dropped); an item is ``{"input_ids", "labels"}``."""

    def __init__(self, examples: Sequence[Example], seq_len: int) -> None:
        ids = [t for e in examples for t in e[0]]
        labels = [t for e in examples for t in e[1]]
        count = len(ids) // seq_len
        if count == 0:
            raise UsageError(f"the data holds {len(ids)} tokens, fewer than one sequence of "
                             f"seq_len {seq_len}")
        self.input_ids = torch.tensor(ids[: count * seq_len]).view(count, seq_len)
        self.labels = torch.tensor(labels[: count * seq_len]).view(count, seq_len)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


class PaddedExamples:
    """One example per item, cut to ``seq_len`` tokens; ``collate`` pads a batch to its
    longest example (padding gets label ``IGNORE`` and attention mask 0)."""

    def __init__(self, examples: Sequence[Example], seq_len: int, pad_id: int) -> None:
        self.examples = [(ids[:seq_len], labels[:seq_len]) for ids, labels in examples
                         if any(label != IGNORE for label in labels[1:seq_len])]
        if not self.examples:
            raise UsageError(f"no example has a token to predict within seq_len {seq_len}")
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def collate(self, items: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``labels`` and ``attention_mask``."""
        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (item_ids, item_labels) in enumerate(items):
            ids[row, : len(item_ids)] = torch.tensor(item_ids)
            labels[row, : len(item_labels)] = torch.tensor(item_labels)
            mask[row, : len(item_ids)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy SUMMED over the predicted tokens, and their count."""
    shifted = labels[:, 1:]
    loss_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1),
        ignore_index=IGNORE, reduction="sum")
    return loss_sum, (shifted != IGNORE).sum()


def batch_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments from a batch (everything but the labels)."""
    return {k: v for k, v in batch.items() if k != "labels"}
