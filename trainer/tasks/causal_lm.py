"""The ``causal_lm`` task: fine-tune a Hugging Face causal language model, with LoRA (peft) or
fully. Imported only when a run asks for it, so hosts without transformers/peft can train the
other tasks. The loss unit is one predicted (target) token.

Options (``[run.task_options]`` / ``--task-option KEY=VALUE``) are ``CausalLMOptions``'
fields (``trainer/tasks/lm_options.py``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from profiles.user_errors import UsageError
from trainer.settings.train_config import TASK_PACKAGES
from trainer.tasks import Task
from trainer.tasks.lm_data import (
    PackedSequences,
    PaddedExamples,
    RenderChat,
    Row,
    batch_inputs,
    read_examples,
    token_loss,
    tokenize_examples,
)
from trainer.tasks.lm_model import adapt, load_model, save_results
from trainer.tasks.lm_options import OPTIONS, CausalLMOptions, parse_options
from trainer.tasks.lm_samples import generate_samples

__all__ = ["OPTIONS", "PIP_LINE", "CausalLMOptions", "build", "parse_options"]

PIP_LINE = "pip install " + " ".join(f"'{r}'" for r in TASK_PACKAGES["causal_lm"])
"""How to install what this task needs (``corral check`` says the same for a host)."""


def build(options: dict[str, Any]) -> Task:
    """The causal_lm task for ``options`` (every mistake is a UsageError naming it)."""
    opts = parse_options(options)
    # Before anything is loaded: one line naming the file and line of a bad row.
    rows, held_out_rows = _train_and_held_out_rows(opts)
    try:
        import peft  # noqa: F401  (checked here so the message names both packages)
        import transformers
    except ImportError as exc:
        raise UsageError(f"the causal_lm task needs {exc.name}: {PIP_LINE}") from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # peft asks transformers a deprecated question; the warning is about their versions.
    warnings.filterwarnings("ignore", message=".*(is_)?gradient_checkpointing.*deprecated")
    model, tokenizer = load_model(opts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    render = _chat_renderer(tokenizer, opts, [*rows, *held_out_rows])

    def sequences(of_rows: list[Row]) -> PackedSequences | PaddedExamples:
        examples = tokenize_examples(
            of_rows, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
            tokenizer.bos_token_id, tokenizer.eos_token_id, render)
        return (PackedSequences(examples, opts.seq_len) if opts.packing
                else PaddedExamples(examples, opts.seq_len, pad_id))

    data = sequences(rows)
    eval_data = sequences(held_out_rows) if held_out_rows else None
    model = adapt(model, opts)

    def save_final(trained: Any, folder: Path) -> None:
        save_results(trained, tokenizer, opts, folder)

    def samples(trained: Any) -> list[tuple[str, str]]:
        try:
            return generate_samples(trained, tokenizer, held_out_rows or rows, opts.samples,
                                    opts.sample_tokens, render)
        except (RuntimeError, AssertionError, ValueError) as exc:
            # The trained result is already written: a generation the libraries refuse (e.g.
            # bitsandbytes' CPU kernel on odd layer sizes) must not fail the finished run.
            print(f"corral trainer: no samples: generation failed ({exc})", file=sys.stderr)
            return []

    return Task(model=model, train_data=data, loss=lm_loss, save_final=save_final,
                samples=samples if opts.samples else None,
                item_tokens=data.lengths if isinstance(data, PaddedExamples) else None,
                padded=isinstance(data, PaddedExamples),
                collate=data.collate if isinstance(data, PaddedExamples) else None,
                evaluate=lm_metrics, eval_data=eval_data)


def _chat_renderer(tokenizer: Any, opts: CausalLMOptions, rows: list[Row]
                   ) -> RenderChat | None:
    """The chat template as a function, when some row is a conversation (``chat_template``
    overrides the tokenizer's own; a tokenizer without one needs it)."""
    if not any("messages" in row for row in rows):
        return None
    if opts.chat_template:
        given = Path(opts.chat_template).expanduser()
        tokenizer.chat_template = (given.read_text(encoding="utf-8")
                                   if "{" not in opts.chat_template and given.is_file()
                                   else opts.chat_template)
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"causal_lm data {opts.data} holds chat messages, but the tokenizer "
                         f"of {opts.model} has no chat template: give one with the option "
                         "chat_template (Jinja text or a file)")

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
        return str(text)
    return render


def _train_and_held_out_rows(
    opts: CausalLMOptions,
) -> tuple[list[Row], list[Row]]:
    """The training examples and the held-out ones: ``eval_data``'s, else the last
    ``eval_fraction`` of ``data``'s (never trained on), else none."""
    rows = read_examples(Path(opts.data).expanduser())
    if opts.eval_data:
        return rows, read_examples(Path(opts.eval_data).expanduser())
    held = round(len(rows) * opts.eval_fraction)
    if opts.eval_fraction and not 0 < held < len(rows):
        raise UsageError(f"causal_lm eval_fraction {opts.eval_fraction} of {len(rows)} "
                         f"examples in {opts.data} leaves {len(rows) - held} to train on and "
                         f"{held} to evaluate: both need at least one")
    return rows[: len(rows) - held], rows[len(rows) - held:]


def lm_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Next-token cross-entropy summed over the target tokens, and their count."""
    logits = model(**batch_inputs(batch)).logits
    return token_loss(logits, batch["labels"])


def lm_metrics(model: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
    """Held-out sums: summed token loss and the number of target tokens."""
    loss_sum, tokens = lm_loss(model, batch)
    return {"loss_sum": float(loss_sum), "tokens": float(tokens)}
