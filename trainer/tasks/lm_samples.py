"""Sample generations at the end of a causal_lm run: greedy continuations of a few held-out
prompts (the held-out rows, else the first training rows), shown by ``corral report``.

A prompt is what the model would be asked: a pair's prompt, a conversation up to its last
assistant turn (rendered with the generation prompt), or the first half of a text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.tasks.lm_data import RenderChat, Row

TEXT_PROMPT_CHARS = 200
"""A text row's prompt: its first half, at most this many characters."""


def _prompt(row: Row, render: RenderChat | None) -> tuple[str, bool] | None:
    """The prompt text of a row and whether it gets the tokenizer's beginning-of-sequence
    token (a chat template writes its own); None when the row has none."""
    if "prompt" in row:
        return row["prompt"], True
    if "messages" in row:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return (render(messages[:last], True), False) if render is not None else None
    text = row["text"]
    return text[: min(len(text) // 2, TEXT_PROMPT_CHARS)], True


def generate_samples(model: Any, tokenizer: Any, rows: Sequence[Row], count: int,
                     max_new_tokens: int, render: RenderChat | None) -> list[tuple[str, str]]:
    """``(prompt, greedy continuation)`` for the first ``count`` rows that have a prompt."""
    import torch

    prompts = [p for p in (_prompt(row, render) for row in rows[: count * 2]) if p and p[0]]
    device = next(model.parameters()).device
    model.eval()
    written = []
    with torch.no_grad():
        for text, with_bos in prompts[:count]:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if with_bos and tokenizer.bos_token_id is not None:
                ids = [tokenizer.bos_token_id, *ids]
            inputs = torch.tensor([ids], device=device)
            out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            written.append((text, tokenizer.decode(out[0, len(ids):],
                                                   skip_special_tokens=True)))
    return written
