"""causal_lm on a quantised base (real bitsandbytes on CPU): 4-bit NF4 and 8-bit, with
gradient checkpointing, micro-batches and LoRA. One process's run, stopped halfway and resumed
on an uneven split, ends at the adapter of the same process straight through, and final/ is an
adapter plain PEFT loads onto the quantised base."""

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

STEPS = 6


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    pytest.importorskip("bitsandbytes")
    from trainer.tiny_lm import TinyLMShape

    # bitsandbytes' CPU inference kernel (used by generate) packs weights in blocks of 32 rows.
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), TinyLMShape(intermediate_size=192))


def _run(run_dir: Path, split: str, *flags: str) -> dict[str, torch.Tensor]:
    nproc = len(split.split(","))
    check(launch(nproc, *flags, "--global-batch", "8", "--split", split,
                 "--run-dir", str(run_dir)))
    return final_params(run_dir)


def _quantisation(option: str) -> object:
    from transformers import BitsAndBytesConfig

    if option == "load_in_8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)


@pytest.mark.parametrize("option", ["load_in_4bit", "load_in_8bit"])
def test_quantised_lora_with_checkpointing_is_exact_over_splits_and_resumes(
        lm: TinyLM, tmp_path: Path, option: str) -> None:
    flags = (*lm_flags(lm, data=lm.pairs, packing=False, seq_len=64,
                       extra=(f"{option}=true", "gradient_checkpointing=true")),
             "--micro-batch", "2")
    # One process straight through, with a checkpoint halfway for the resumed run below.
    one = _run(tmp_path / "one", "8", *flags, "--steps", str(STEPS),
               "--checkpoint-every", str(STEPS // 2))
    assert one and all("lora_" in name for name in one)  # only the adapters: no 4-bit state
    losses = [e["global_loss"] for e in of_kind(events(tmp_path / "one", 0), "step")]
    assert losses[-1] < losses[0]

    # A copy of that run, cut back to its halfway checkpoint as if it had stopped there and
    # resumed on an uneven split (SGD with momentum: its buffers are restored too), ends at
    # the adapter of one process straight through: the restore, and the split's exactness
    # over the second half. Both dequantise the weights and compute in fp32 in training mode
    # (docs/trainer.md). An 8-bit base left in eval mode takes bitsandbytes' int8 inference
    # path instead, whose result depends on which samples share a pass (9.3e-4 after six
    # steps on an uneven split).
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "one", resumed_dir)
    cut_back_to(resumed_dir, STEPS // 2)
    resumed = _run(resumed_dir, "5,2,1", *flags, "--steps", str(STEPS), "--resume")
    assert [s["step"] for s in of_kind(events(resumed_dir, 0), "start")] == [0, STEPS // 2]
    assert max_rel_diff(one, resumed) <= 1e-5

    # final/ is a PEFT adapter that plain PEFT loads onto the quantised base, and it generates.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(
        lm.model, quantization_config=_quantisation(option), device_map={"": "cpu"})
    model = PeftModel.from_pretrained(base, resumed_dir / "final")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert loaded and any(v.abs().sum() > 0 for v in loaded.values())  # not the zero init
    tokenizer = AutoTokenizer.from_pretrained(resumed_dir / "final")
    prompt = tokenizer("Q: red cat\nA:", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 6
