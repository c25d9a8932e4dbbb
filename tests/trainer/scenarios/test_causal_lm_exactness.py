"""causal_lm with LoRA on the tiny model: any split gives the parameters of one process, for
packed text and for padded prompt/completion pairs of varying length; stop + resume equals a
straight run; final/ loads with peft alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lm_fixtures import TinyLM, lm_flags, make_tiny_lm
from trainer_runs import (
    check,
    cut_back_to,
    events,
    final_params,
    launch,
    max_rel_diff,
    of_kind,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def _run(run_dir: Path, split: str, *flags: str) -> dict[str, torch.Tensor]:
    nproc = len(split.split(","))
    check(launch(nproc, *flags, "--global-batch", "8", "--split", split,
                 "--run-dir", str(run_dir)))
    return final_params(run_dir)


def test_packed_text_any_split_gives_the_same_lora_weights(lm: TinyLM, tmp_path: Path) -> None:
    flags = (*lm_flags(lm), "--steps", "20")
    one = _run(tmp_path / "one", "8", *flags)
    assert one and all("lora_" in name for name in one)  # only the adapters are trained
    uneven = _run(tmp_path / "1,3,4", "1,3,4", *flags)  # three ranks, one with a single item
    assert max_rel_diff(one, uneven) <= 1e-5
    steps = of_kind(events(tmp_path / "one", 0), "step")
    assert [e["loss_units"] for e in steps] == [8 * 47] * 20  # every packed token but the first
    assert steps[-1]["global_loss"] < steps[0]["global_loss"]


def test_padded_pairs_any_split_gives_the_same_lora_weights(lm: TinyLM, tmp_path: Path) -> None:
    flags = (*lm_flags(lm, data=lm.pairs, packing=False, seq_len=64), "--steps", "20")
    one = _run(tmp_path / "one", "8", *flags)
    # Gradient checkpointing recomputes the same activations: under DDP too, nothing changes.
    uneven = _run(tmp_path / "uneven", "2,1,5", *flags, "--task-option",
                  "gradient_checkpointing=true")
    assert max_rel_diff(one, uneven) <= 1e-5
    # Ranks held different numbers of completion tokens: the count is of targets, not samples.
    units = [[e["loss_units"] for e in of_kind(events(tmp_path / "uneven", r), "step")]
             for r in range(3)]
    totals = [sum(col) for col in zip(*units, strict=True)]
    assert totals == [e["loss_units"] for e in of_kind(events(tmp_path / "one", 0), "step")]
    assert len(set(totals)) > 1  # varying lengths really vary


def test_stop_at_10_and_resume_to_20_equals_20_straight(lm: TinyLM, tmp_path: Path) -> None:
    # The optimizer state is restored too; micro-batches and clipping stay on across the stop.
    flags = [*lm_flags(lm, optimizer="adamw"), "--micro-batch", "3", "--clip-grad", "0.05"]
    straight = _run(tmp_path / "straight", "5,3", *flags, "--steps", "20",
                    "--checkpoint-every", "10")
    # A copy of the straight run, cut back to its step-10 checkpoint as if it had stopped there.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed_dir)
    cut_back_to(resumed_dir, 10)
    resumed = _run(resumed_dir, "5,3", *flags, "--steps", "20", "--resume")
    assert [s["step"] for s in of_kind(events(resumed_dir, 0), "start")] == [0, 10]
    assert max_rel_diff(straight, resumed) <= 1e-6

    # final/ is a PEFT adapter that loads with no corral code and generates text.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(lm.model)
    model = PeftModel.from_pretrained(base, resumed_dir / "final")
    trained = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert trained and any(v.abs().sum() > 0 for v in trained.values())  # not the zero init
    tokenizer = AutoTokenizer.from_pretrained(resumed_dir / "final")
    prompt = tokenizer("The cat", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
    assert isinstance(tokenizer.decode(out[0]), str)
