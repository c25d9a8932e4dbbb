"""The causal_lm task's model: loading (full precision, or a 4-bit / 8-bit bitsandbytes base),
preparation for training (k-bit preparation, gradient checkpointing, LoRA) and the results
written at the end (the adapter, and the merged full model on request).

A quantised base follows the recipe PEFT documents for QLoRA: NF4 with double quantisation
(or LLM.int8()), ``prepare_model_for_kbit_training`` (norms and embeddings in fp32, input
gradients on), then LoRA adapters, the only trained parameters. Checkpointing is the
non-reentrant kind, which keeps one forward per backward under DDP and micro-batches.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from profiles.user_errors import UsageError
from trainer.settings.train_config import QUANTISED_PACKAGES
from trainer.tasks.lm_options import CausalLMOptions, quantised

CHECKPOINTING_KWARGS = {"use_reentrant": False}
"""Non-reentrant checkpointing: the reentrant kind marks DDP's gradients ready twice."""


def _quantisation_config(opts: CausalLMOptions) -> Any:
    """The ``BitsAndBytesConfig`` of the options, or None for a full-precision base."""
    if not quantised(opts):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("causal_lm load_in_4bit/load_in_8bit need bitsandbytes: pip install "
                         + " ".join(f"'{r}'" for r in QUANTISED_PACKAGES)) from None
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    if opts.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=opts.llm_int8_threshold)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, opts.bnb_4bit_compute_dtype))


def _device_map() -> dict[str, Any]:
    """Where a quantised base is loaded: bitsandbytes quantises on the device that runs it
    (this rank's GPU, set by the trainer before the task is built, else the CPU)."""
    import torch

    if torch.cuda.is_available():
        return {"": torch.cuda.current_device()}
    return {"": "cpu"}


def _model_name(opts: CausalLMOptions) -> str:
    """``model`` as transformers reads it: a local directory's path, or a hub id."""
    where = Path(opts.model).expanduser()
    local = where.exists() or opts.model.startswith(("/", ".", "~"))
    if local and not where.is_dir():
        raise UsageError(f"causal_lm model {opts.model}: no such directory (give a directory "
                         "in save_pretrained layout, e.g. from python -m trainer.tiny_lm)")
    return str(where) if local else opts.model


def load_model(opts: CausalLMOptions) -> tuple[Any, Any]:
    """The base model (full precision or quantised) and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = _model_name(opts)
    quantisation = _quantisation_config(opts)
    placement = {"quantization_config": quantisation, "device_map": _device_map()} \
        if quantisation is not None else {}
    try:
        config = AutoConfig.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **placement)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"causal_lm model {opts.model} is not a causal language model "
                         f"transformers can load: {first}") from None
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and opts.seq_len > limit:
        raise UsageError(f"causal_lm seq_len {opts.seq_len} is longer than model "
                         f"{opts.model} allows (max_position_embeddings {limit})")
    return model, tokenizer


def adapt(model: Any, opts: CausalLMOptions) -> Any:
    """k-bit preparation, gradient checkpointing and LoRA adapters (lora_r 0: every weight is
    trained)."""
    if quantised(opts):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=opts.gradient_checkpointing,
            gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    elif opts.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    model.config.use_cache = False
    if opts.lora_r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in opts.lora_targets.split(",") if t.strip()]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing or not targets:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, nn.Linear)})
        raise UsageError(f"causal_lm lora_targets {','.join(missing) or '(none)'} match no "
                         f"module of the model; its linear layers are {', '.join(linear)}")
    lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha,
                      lora_dropout=opts.lora_dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


MERGED = "merged"
"""The folder under ``final/`` holding the merged full model (``merge = true``)."""


def save_results(trained: Any, tokenizer: Any, opts: CausalLMOptions, folder: Path) -> None:
    """``final/``: the adapter (LoRA) or the whole model (lora_r 0) with the tokenizer; with
    ``merge``, also ``final/merged/``, the adapter merged into the base's full-precision
    weights (a quantised base is loaded again unquantised for it, as PEFT documents), in
    ``save_pretrained`` layout."""
    trained.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not opts.merge or opts.lora_r == 0:
        return
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(_model_name(opts), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    merged.save_pretrained(folder / MERGED)
    tokenizer.save_pretrained(folder / MERGED)
