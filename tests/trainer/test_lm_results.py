"""causal_lm's results: ``merge = true`` writes final/merged/, a whole model that plain
transformers loads and that gives the logits of the base with the adapter (from a 4-bit base
too: merged into the full-precision weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lm_fixtures import TinyLM, make_tiny_lm

from trainer.tasks.lm_model import MERGED


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    from trainer.tiny_lm import TinyLMShape

    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), TinyLMShape(intermediate_size=192))


@pytest.mark.parametrize("quantised", [False, True])
def test_merged_export_gives_the_logits_of_base_plus_adapter(
        lm: TinyLM, tmp_path: Path, quantised: bool) -> None:
    if quantised:
        pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.tasks.causal_lm import build

    options = {"model": str(lm.model), "data": str(lm.pairs), "packing": False,
               "lora_r": 4, "lora_alpha": 8, "merge": True, "load_in_4bit": quantised}
    task = build(options)
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter: lora_B away from its zero init
        for name, param in task.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    assert task.save_final is not None
    task.save_final(task.model, tmp_path)

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / MERGED)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    # The full-precision base with the adapter, as PEFT loads it.
    base = AutoModelForCausalLM.from_pretrained(lm.model, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, tmp_path).eval()
    ids = torch.tensor([[1, 70, 80, 90, 100, 33, 44]])
    with torch.no_grad():
        want, got = adapted(input_ids=ids).logits, merged.eval()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    plain = AutoModelForCausalLM.from_pretrained(lm.model).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(input_ids=ids).logits, got, atol=1e-4)  # adapter in


def test_samples_are_greedy_continuations_of_held_out_prompts_shown_by_the_report(
        lm: TinyLM) -> None:
    from rich.console import Console

    from console.report import samples_table
    from figures.reducer import RunFigures
    from remote.records.summary import Sample
    from trainer.events import SamplesEvent, event_to_json, parse_event
    from trainer.tasks.causal_lm import build

    options = {"model": str(lm.model), "data": str(lm.pairs), "packing": False,
               "eval_fraction": 0.25, "samples": 2, "sample_tokens": 5}
    task = build(options)
    assert task.samples is not None
    written = task.samples(task.model)
    held_out = [json.loads(line) for line in lm.pairs.read_text().splitlines()][48:50]
    assert [p for p, _ in written] == [row["prompt"] for row in held_out]
    assert all(isinstance(out, str) and out for _, out in written)
    assert task.samples(task.model) == written  # greedy: the same text again
    assert build({**options, "samples": 0}).samples is None

    event = SamplesEvent(t=1.0, rank=0, step=9, prompts=tuple(p for p, _ in written),
                         outputs=tuple(o for _, o in written))
    figures = RunFigures()
    figures.observe(parse_event(event_to_json(event)))  # type: ignore[arg-type]
    assert figures.samples == event
    console = Console(width=120, record=True)
    summary = type("S", (), {"samples": [Sample(prompt=p, output=o) for p, o in written]})
    console.print(samples_table(summary))  # type: ignore[arg-type]
    assert held_out[0]["prompt"].splitlines()[0] in console.export_text()

