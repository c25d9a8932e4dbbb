"""The causal_lm task in one process: data preparation, the token loss, options, and every bad
input named before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lm_fixtures import TinyLM, make_tiny_lm

from profiles.user_errors import UsageError
from trainer.tasks.lm_data import (
    IGNORE,
    PackedSequences,
    PaddedExamples,
    read_examples,
    token_loss,
    tokenize_examples,
)


def _bytes(text: str) -> list[int]:
    return list(text.encode())


def test_prompts_are_not_predicted_and_texts_are() -> None:
    rows = [{"text": "ab"}, {"prompt": "xy", "completion": "z"}]
    (ids0, labels0), (ids1, labels1) = tokenize_examples(rows, _bytes, bos=1, eos=2)
    assert ids0 == [1, 97, 98, 2] and labels0 == ids0
    assert ids1 == [1, 120, 121, 122, 2] and labels1 == [IGNORE, IGNORE, IGNORE, 122, 2]


def test_packing_cuts_the_token_stream_into_full_sequences() -> None:
    examples = tokenize_examples([{"text": "abcdefg"}, {"text": "hij"}], _bytes, 1, 2)
    packed = PackedSequences(examples, seq_len=4)
    assert len(packed) == 3  # 9 + 5 = 14 tokens: three sequences of 4, two tokens dropped
    assert packed[1]["input_ids"].tolist() == [100, 101, 102, 103]


def test_padding_is_masked_out_of_the_loss_and_the_count() -> None:
    examples = tokenize_examples([{"prompt": "ab", "completion": "cd"}, {"text": "e"}],
                                 _bytes, 1, 2)
    data = PaddedExamples(examples, seq_len=16, pad_id=0)
    batch = data.collate([data[0], data[1]])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    logits = torch.randn(2, 6, 128)
    loss_sum, count = token_loss(logits, batch["labels"])
    assert int(count) == 3 + 2  # c, d, </s> of the pair; e, </s> of the text
    # The same two rows alone, unpadded, give the same summed loss.
    alone = sum(token_loss(logits[i : i + 1, : n], batch["labels"][i : i + 1, : n])[0]
                for i, n in ((0, 6), (1, 3)))
    assert torch.allclose(loss_sum, alone)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", "\n\n  \n", "is empty"),
        ("rows.jsonl", '{"text": "ok"}\n{"body": "x"}\n', 'rows.jsonl:2: no "text" field'),
        ("rows.jsonl", '{"text": "ok"}\n{not json\n', "rows.jsonl:2: not a JSON object"),
        ("rows.jsonl", '{"prompt": "Q: red"}\n',
         'rows.jsonl:1: no "text" field \\(or "prompt" and "completion", or "messages"\\)'),
        ("rows.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("data.csv", "a,b\n", "expected a .txt or .jsonl file"),
    ],
)
def test_bad_data_files_are_named(tmp_path: Path, name: str, content: str | None,
                                  needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=needle):
        read_examples(path)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm-task"))


def _build(lm: TinyLM, **options: object) -> object:
    from trainer.tasks.causal_lm import build

    return build({"model": str(lm.model), "data": str(lm.corpus), "seq_len": 32, **options})


def test_lora_trains_only_the_adapters_and_full_fine_tuning_everything(lm: TinyLM) -> None:
    from trainer.tasks import Task, trainable_parameters

    task = _build(lm, lora_r=4, lora_targets="q_proj,k_proj,o_proj")
    assert isinstance(task, Task)
    names = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "k_proj", "o_proj"}
    full = _build(lm, lora_r=0, gradient_checkpointing=True)
    assert isinstance(full, Task)
    assert len(trainable_parameters(full)) == len(list(full.model.parameters()))
    batch = {k: v.unsqueeze(0) for k, v in full.train_data[0].items()}  # type: ignore[index]
    loss_sum, count = full.loss(full.model, batch)
    loss_sum.backward()
    assert int(count) == 31 and all(p.grad is not None for p in full.model.parameters())


def test_bad_causal_lm_input_is_named(lm: TinyLM, tmp_path: Path) -> None:
    not_lm = tmp_path / "resnet"
    not_lm.mkdir()
    (not_lm / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    cases = [
        ({"model": str(tmp_path / "nowhere")}, "no such directory"),
        ({"model": str(not_lm)}, "is not a causal language model"),
        ({"model": str(tmp_path)}, "is not a causal language model"),  # no config.json
        ({"seq_len": 4096}, "longer than model"),
        ({"lora_targets": "q_proj,gate"}, "lora_targets gate match no module"),
        ({"lora_rank": 4}, "did you mean lora_r?"),
        ({"lora_r": "four"}, "expected int"),
        ({"data": str(tmp_path / "none.txt")}, "does not exist"),
    ]
    for options, needle in cases:
        with pytest.raises(UsageError) as err:
            _build(lm, **options)
        assert needle in str(err.value), (options, str(err.value))
    from trainer.tasks.causal_lm import build

    with pytest.raises(UsageError, match="needs the option data"):
        build({"model": str(lm.model)})
