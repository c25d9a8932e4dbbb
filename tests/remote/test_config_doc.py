"""docs/cluster-toml.md stays in step with the config dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from remote.config.cluster import SECTIONS
from remote.config.doc import BEGIN, END, field_docs, render_reference, splice
from remote.config.read import parse_cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster-toml.md"


def test_generated_reference_is_up_to_date() -> None:
    text = DOC.read_text()
    assert splice(text, render_reference()) == text, (
        "docs/cluster-toml.md is out of date: run python -m remote.config.doc")


def test_every_key_is_documented_with_a_meaning() -> None:
    text = DOC.read_text()
    reference = text[text.index(BEGIN):text.index(END)]
    for name, cls in SECTIONS.items():
        _, docs = field_docs(cls)
        for field in dataclasses.fields(cls):
            assert docs.get(field.name), f"{name}.{field.name} has no docstring"
            if not field.init:  # derived by the reader, not a key
                continue
            assert f"| `{field.name}` |" in reference, f"docs lack {name}.{field.name}"


def test_the_doc_example_is_a_valid_cluster_toml() -> None:
    text = DOC.read_text()
    example = text[text.index("```toml") + len("```toml"):]
    example = example[:example.index("```")]
    config = parse_cluster(example, path=DOC)
    assert [h.name for h in config.hosts] == ["gpu1", "laptop"]
