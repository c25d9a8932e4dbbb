"""The runs (slow tier) of what ``tests/trainer/test_lm_chat.py`` tests: chat data for causal_lm:
``messages`` rendered with the chat template, the loss on the assistant turns only, bad rows
named by file and line, a tokenizer without a template named with the option that fixes it; and
any split gives the adapter of one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_fixtures import CHAT_TEMPLATE, TinyLM, lm_flags, make_tiny_lm
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.mark.slow
def test_chat_data_any_split_gives_the_same_lora_weights(lm: TinyLM, tmp_path: Path) -> None:
    template = tmp_path / "chat.jinja"
    template.write_text(CHAT_TEMPLATE)
    flags = (*lm_flags(lm, data=lm.chats, packing=False, seq_len=96,
                       extra=(f"chat_template={template}",)),
             "--steps", "8", "--global-batch", "8")
    runs = {}
    for split in ("8", "5,2,1"):
        check(launch(len(split.split(",")), *flags, "--split", split,
                     "--run-dir", str(tmp_path / split)))
        runs[split] = final_params(tmp_path / split)
    assert max_rel_diff(runs["8"], runs["5,2,1"]) <= 1e-5
    steps = of_kind(events(tmp_path / "8", 0), "step")
    assert steps[-1]["global_loss"] < steps[0]["global_loss"]
    # The run ends with greedy samples: conversations up to their last assistant turn.
    [samples] = of_kind(events(tmp_path / "8", 0), "samples")
    assert len(samples["prompts"]) == 3 == len(samples["outputs"])
    assert all(p.endswith("<|assistant|>\n") for p in samples["prompts"])
