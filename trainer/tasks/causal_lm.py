"""The ``causal_lm`` task: fine-tune a Hugging Face causal language model, with LoRA (peft) or
fully. Imported only when a run asks for it, so hosts without transformers/peft can train the
other tasks. The loss unit is one predicted (target) token.

Options (``[run.task_options]`` / ``--task-option KEY=VALUE``) are ``OPTIONS`` below.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from dataclasses import dataclass, fields
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
from trainer.tasks.lm_model import COMPUTE_DTYPES, adapt, load_model, quantised, save_results
from trainer.tasks.lm_samples import generate_samples

PIP_LINE = "pip install " + " ".join(f"'{r}'" for r in TASK_PACKAGES["causal_lm"])
"""How to install what this task needs (``corral check`` says the same for a host)."""


@dataclass(frozen=True, kw_only=True)
class CausalLMOptions:
    """The causal_lm task's options."""

    model: str
    """A local directory in ``save_pretrained`` layout, or a hub id (needs the hub)."""
    data: str
    """A ``.txt`` (documents separated by blank lines) or ``.jsonl`` (``text``; ``prompt``
    and ``completion`` with the loss on the completion only; or chat ``messages`` with the
    loss on the assistant turns only) file."""
    seq_len: int = 256
    """Tokens per sequence (at most the model's ``max_position_embeddings``)."""
    packing: bool = True
    """True: concatenate and cut into ``seq_len`` sequences; False: one example per sequence,
    padded per batch (padding is masked out of the loss and out of the token count)."""
    lora_r: int = 16
    """LoRA rank; 0 = full fine-tuning."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; > 0 draws random masks per rank, so results then depend on
    the split (0 keeps the exactness guarantee)."""
    lora_targets: str = "q_proj,v_proj"
    """Comma-separated module names that get LoRA adapters."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (non-reentrant): less memory, more compute."""
    load_in_4bit: bool = False
    """Load the base in 4 bits (bitsandbytes NF4 with double quantisation) and train LoRA
    adapters on it (QLoRA); needs bitsandbytes and ``lora_r`` > 0."""
    load_in_8bit: bool = False
    """Load the base in 8 bits (bitsandbytes LLM.int8()) and train LoRA adapters on it."""
    bnb_4bit_compute_dtype: str = "float32"
    """The arithmetic of the 4-bit layers: float32, bfloat16 or float16."""
    llm_int8_threshold: float = 6.0
    """8-bit: activations above this go through LLM.int8()'s fp16 outlier path (0 = none);
    on a GPU, where the columns are chosen per pass, a result that depends on the split."""
    eval_data: str = ""
    """A held-out file in ``data``'s format (also ``--eval-data``), evaluated by
    ``--eval-every``."""
    chat_template: str = ""
    """For chat rows: a Jinja chat template (or a file holding one) used instead of the
    tokenizer's own; required when the tokenizer has none."""
    eval_fraction: float = 0.0
    """Without ``eval_data``: this fraction of ``data``'s examples (the last ones) is held out
    from training and evaluated instead."""
    samples: int = 3
    """Greedy generations from this many held-out prompts (the held-out rows, else the first
    training rows) at the end of the run, shown by ``corral report``; 0 = none."""
    sample_tokens: int = 32
    """Tokens generated per sample."""
    merge: bool = False
    """Also write ``final/merged/``: the adapter merged into the base's full-precision
    weights, a whole model in ``save_pretrained`` layout."""


OPTIONS = tuple(f.name for f in fields(CausalLMOptions))


def parse_options(options: dict[str, Any]) -> CausalLMOptions:
    """Check the option names and types (UsageError naming the option, with 'did you mean')."""
    for key in options:
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"causal_lm has no option {key!r}{hint}; options: "
                             f"{', '.join(OPTIONS)}")
    for required in ("model", "data"):
        if required not in options:
            raise UsageError(f"causal_lm needs the option {required} "
                             f"(--task-option {required}=...)")
    values: dict[str, Any] = {}
    for f in fields(CausalLMOptions):
        if f.name in options:
            values[f.name] = _typed(f.name, options[f.name], str(f.type))
    parsed = CausalLMOptions(**values)
    if parsed.seq_len < 2:
        raise UsageError(f"causal_lm option seq_len must be >= 2, got {parsed.seq_len}")
    if not 0 <= parsed.eval_fraction < 1:
        raise UsageError(f"causal_lm option eval_fraction must be in [0, 1), got "
                         f"{parsed.eval_fraction}")
    if parsed.samples < 0 or parsed.sample_tokens < 1:
        raise UsageError("causal_lm options need samples >= 0 and sample_tokens >= 1")
    if parsed.lora_r < 0 or parsed.lora_alpha <= 0 or not 0 <= parsed.lora_dropout < 1:
        raise UsageError("causal_lm options need lora_r >= 0, lora_alpha > 0 and "
                         "0 <= lora_dropout < 1")
    _check_quantisation(parsed)
    return parsed


def _check_quantisation(parsed: CausalLMOptions) -> None:
    if parsed.load_in_4bit and parsed.load_in_8bit:
        raise UsageError("causal_lm options load_in_4bit and load_in_8bit exclude each other: "
                         "set one")
    if quantised(parsed) and parsed.lora_r == 0:
        raise UsageError("causal_lm load_in_4bit/load_in_8bit train LoRA adapters on the "
                         "frozen quantised base: set lora_r > 0")
    if parsed.bnb_4bit_compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"causal_lm option bnb_4bit_compute_dtype="
                         f"{parsed.bnb_4bit_compute_dtype!r}: expected one of "
                         f"{', '.join(COMPUTE_DTYPES)}")


def _typed(name: str, value: Any, kind: str) -> Any:
    wrong = UsageError(f"causal_lm option {name}={value!r}: expected {kind}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise wrong
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if kind == "int" and value != int(value):
            raise wrong
        return int(value) if kind == "int" else float(value)
    if isinstance(value, list):  # lora_targets given as a TOML list
        return ",".join(str(v) for v in value)
    return str(value)


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
