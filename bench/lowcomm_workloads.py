"""The workloads the low-communication benches train (``bench/lowcomm.py``, its shaped part
``bench/lowcomm_shaped.py``): the trainer flags of each, with the
same seed, data and optimizer in every mode. Apart from the benches so that each imports it
and none imports another."""

from __future__ import annotations

from pathlib import Path

from bench._common import tiny_lm_files
from trainer.tiny_lm import TinyLMShape


def lm_shape(text: str) -> TinyLMShape:
    """``--lm-shape HIDDEN,INTERMEDIATE,LAYERS`` as the tiny LM's shape."""
    hidden, intermediate, layers = (int(v) for v in text.split(","))
    return TinyLMShape(hidden_size=hidden, intermediate_size=intermediate, layers=layers)


def workload_flags(name: str, scratch: Path, quick: bool, shape: TinyLMShape | None = None,
                   lm_steps: int = 768) -> tuple[list[str], int]:
    """The trainer flags of a workload (same seed, data and optimizer in every mode) and its
    global batch (``shape``: the LM's, default the tiny one; ``lm_steps``: its exact run's
    steps)."""
    if name == "cnn":
        # SGD at a low rate: the synthetic images are easy, and a loss near 0 at the end
        # would make every ratio meaningless.
        steps = 64 if quick else 128
        return ["--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "4096",
                "--global-batch", "32", "--steps", str(steps), "--optimizer", "sgd",
                "--lr", "0.003", "--momentum", "0.9", "--eval-every", str(steps // 8),
                "--eval-samples", "512", "--seed", "11"], 32
    model, corpus = tiny_lm_files(scratch)
    if shape is not None:
        model = model.with_name(f"lm-{shape.hidden_size}-{shape.intermediate_size}-"
                                f"{shape.layers}")
    if not (model / "config.json").is_file():
        from trainer.tiny_lm import write_corpus, write_tiny_lm

        write_tiny_lm(model, shape=shape)
        write_corpus(corpus, documents=600)
    steps = 96 if quick else lm_steps
    flags = ["--task", "causal_lm", "--global-batch", "8", "--steps", str(steps),
             "--optimizer", "adamw", "--lr", "0.002", "--eval-every", str(steps // 8),
             "--seed", "11"]
    for option in (f"model={model}", f"data={corpus}", "seq_len=64", "lora_r=0",
                   "eval_fraction=0.1"):
        flags += ["--task-option", option]
    return flags, 8
