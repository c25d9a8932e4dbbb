"""Language-model training data: documents, prompt/completion pairs and chat conversations,
tokenized, packed into ``seq_len`` sequences or padded per batch.

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
Row = dict[str, Any]
"""One example as read: ``{"text"}``, ``{"prompt", "completion"}`` or ``{"messages"}``."""
Message = dict[str, str]
RenderChat = Callable[[list[Message], bool], str]
"""``render(messages, add_generation_prompt) -> text``: the tokenizer's chat template."""
Segments = list[tuple[str, bool]]
"""A conversation's text in order, each piece marked True where the model is trained on it."""


def read_examples(path: Path) -> list[Row]:
    """``.txt``: documents separated by blank lines (``{"text": ...}``); ``.jsonl``: one object
    per line with ``text``, ``prompt`` and ``completion``, or ``messages``. The first bad row
    is a UsageError naming the file and its line."""
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


def _jsonl_row(path: Path, number: int, line: str) -> Row:
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
    if "messages" in row:
        return {"messages": _messages(where, row["messages"])}
    raise UsageError(f"{where}: no \"text\" field (or \"prompt\" and \"completion\", or "
                     f"\"messages\") holding a string; found keys "
                     f"{', '.join(sorted(row)) or 'none'}")


def _messages(where: str, messages: Any) -> list[Message]:
    """A chat row's ``messages``: a list of ``{"role", "content"}`` strings with at least one
    assistant turn to train on."""
    if not isinstance(messages, list) or not messages:
        raise UsageError(f"{where}: \"messages\" must be a non-empty list of "
                         "{\"role\": ..., \"content\": ...} objects")
    for turn, message in enumerate(messages, 1):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise UsageError(f"{where}: message {turn} needs a \"role\" and a \"content\" "
                             f"string; got {json.dumps(message)[:80]}")
    if not any(m["role"] == "assistant" for m in messages):
        raise UsageError(f"{where}: no \"assistant\" message: nothing to train on")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def chat_segments(messages: list[Message], render: RenderChat) -> Segments:
    """The conversation as the chat template writes it, cut where each assistant turn starts
    and ends: an assistant turn's text (its content and end-of-turn marker) is trained on,
    everything else (system, user, the role headers) is context only. A turn's text is what
    rendering through it adds to rendering up to it with the generation prompt."""
    segments: Segments = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(messages[:index], True)
        through = render(messages[: index + 1], False)
        if not (before.startswith(done) and through.startswith(before)):
            raise UsageError("the chat template renders a conversation's start differently "
                             "from the whole conversation, so its assistant turns cannot be "
                             "found: give a chat_template that renders turn by turn")
        segments += [(before[len(done):], False), (through[len(before):], True)]
        done = through
    full = render(messages, False)
    if not full.startswith(done):
        raise UsageError("the chat template renders a conversation's start differently from "
                         "the whole conversation: give a chat_template that renders turn by "
                         "turn")
    segments.append((full[len(done):], False))
    return [(text, trained) for text, trained in segments if text]


def tokenize_examples(rows: Sequence[Row], tokenize: Tokenize, bos: int | None,
                      eos: int | None, render: RenderChat | None = None) -> list[Example]:
    """Token ids and labels per example: all of a text is predicted; of a prompt/completion
    pair only the completion (and the end-of-sequence token); of a conversation only the
    assistant turns (the chat template writes its own special tokens)."""
    head = [bos] if bos is not None else []
    tail = [eos] if eos is not None else []
    out: list[Example] = []
    for row in rows:
        if "messages" in row:
            if render is None:
                raise UsageError("chat rows need a chat template (the chat_template option)")
            ids, labels = [], []
            for text, trained in chat_segments(row["messages"], render):
                tokens = tokenize(text)
                ids += tokens
                labels += tokens if trained else [IGNORE] * len(tokens)
            out.append((ids, labels))
        elif "text" in row:
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
        self.lengths = [len(ids) for ids, _ in self.examples]
        """Each example's tokens (its compute, for token-balanced shares)."""

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
