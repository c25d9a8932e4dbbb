"""The causal_lm task's options (``[run.task_options]`` / ``--task-option KEY=VALUE``): one
frozen dataclass, one docstring per option, and ``parse_options``, which checks names, types
and the rules between them before anything is loaded. The task (``causal_lm.py``) and its
model (``lm_model.py``) both read them here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from profiles.user_errors import UsageError

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
"""The values of ``bnb_4bit_compute_dtype``."""


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


def quantised(opts: CausalLMOptions) -> bool:
    """The base is loaded in 4 or 8 bits."""
    return opts.load_in_4bit or opts.load_in_8bit
