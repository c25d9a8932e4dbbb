"""Chat data for causal_lm: ``messages`` rendered with the chat template, the loss on the
assistant turns only, bad rows named by file and line, a tokenizer without a template named
with the option that fixes it; and any split gives the adapter of one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_fixtures import CHAT_TEMPLATE, TinyLM, make_tiny_lm

from profiles.user_errors import UsageError
from trainer.tasks.lm_data import IGNORE, read_examples, tokenize_examples

CONVERSATION = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "red cat?"},
                {"role": "assistant", "content": "blue song"},
                {"role": "user", "content": "seven?"},
                {"role": "assistant", "content": "stone"}]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def _tokenizer(lm: TinyLM) -> object:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm.model)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_only_assistant_turns_carry_loss(lm: TinyLM) -> None:
    tokenizer = _tokenizer(lm)
    [(ids, labels)] = tokenize_examples(
        [{"messages": CONVERSATION}],
        lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],  # type: ignore[operator]
        tokenizer.bos_token_id, tokenizer.eos_token_id,  # type: ignore[attr-defined]
        lambda messages, prompt: tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            messages, tokenize=False, add_generation_prompt=prompt))
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)  # type: ignore[attr-defined]
    assert tokenizer.decode(ids) == rendered  # type: ignore[attr-defined]
    trained = tokenizer.decode([t for t, label in zip(ids, labels, strict=True)  # type: ignore[attr-defined]
                                if label != IGNORE])
    # Exactly the assistant contents with their end-of-turn token: no system or user token,
    # no role header.
    assert trained == "blue song</s>stone</s>"
    assert all(label in (IGNORE, t) for t, label in zip(ids, labels, strict=True))


def test_bad_chat_rows_name_the_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    good = json.dumps({"messages": CONVERSATION})
    for bad, needle in (
            ({"messages": []}, '"messages" must be a non-empty list'),
            ({"messages": [{"role": "user"}]}, 'message 1 needs a "role" and a "content"'),
            ({"messages": [{"role": "user", "content": "hi"}]}, 'no "assistant" message'),
            ({"conversation": []}, 'found keys conversation')):
        data.write_text(f"{good}\n\n{json.dumps(bad)}\n")
        with pytest.raises(UsageError, match=f"{data}:3: .*{needle}"):
            read_examples(data)


def test_a_tokenizer_without_a_template_names_the_option(lm: TinyLM) -> None:
    from trainer.tasks.causal_lm import build

    with pytest.raises(UsageError, match="has no chat template: give one with the option "
                                         "chat_template"):
        build({"model": str(lm.model), "data": str(lm.chats), "packing": False})
