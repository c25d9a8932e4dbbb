"""Fuzz: whatever a cluster.toml holds, reading it gives a config or a ConfigError, nothing else.

Documents are generated as Python values and written out as TOML (so most of them parse and
reach the schema checks), plus raw text and mutations of the repository's own cluster.toml
(which reach the deeper cross-section checks and the dataclasses). CORRAL_FUZZ_EXAMPLES=5000
runs a deeper search than the default.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote.config.cluster import SECTIONS, ClusterConfig, ConfigError
from remote.config.read import parse_cluster
from remote.config.toml import field_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_TOML = (Path(__file__).resolve().parents[2] / "cluster.toml").read_text()
PATH = Path("fuzz/cluster.toml")
FUZZ = settings(max_examples=int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "150")),
                deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_KEYS = sorted({key for cls in SECTIONS.values() for key in field_hints(cls)})
KNOWN_WORDS = ["auto", "local", "strict", "insecure", "dynamic", "static", "proportional",
               "simple_cnn", "resnet18", "synthetic_image", "cifar10", "gloo", "nccl", "sgd",
               "adamw", "fast", "slow", "a", "b", "~/.ssh/id", "-x", "eth0", ""]

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
keys = st.sampled_from([*KNOWN_KEYS, *SECTIONS]) | text
scalars = (
    st.sampled_from(KNOWN_WORDS) | text
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-3, max_value=70000)
    | st.floats() | st.booleans() | st.dates()
    | st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc))
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=8)
documents = st.dictionaries(
    st.sampled_from([*SECTIONS]) | keys,
    tables | st.lists(tables, max_size=4) | values,
    max_size=6,
)


def toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """A value as an inline TOML expression."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


def read(text_: str) -> ClusterConfig | ConfigError:
    """Parse; only a config or a ConfigError naming the file may come out."""
    try:
        config = parse_cluster(text_, path=PATH)
    except ConfigError as error:
        assert error.problems, "a ConfigError must name at least one problem"
        assert all(str(p).startswith(f"{PATH}: ") for p in error.problems)
        assert error.exit_code == 2 and error.title
        return error
    names = [h.name for h in config.hosts]
    assert len(set(names)) == len(names) and config.cluster.master in names
    return config


@FUZZ
@given(documents)
def test_arbitrary_documents_only_ever_raise_config_error(document: dict[str, Any]) -> None:
    source = to_toml(document)
    tomllib.loads(source)  # the generator writes valid TOML: the schema layer is what is fuzzed
    read(source)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_config_error(source: str) -> None:
    read(source)


@FUZZ
@given(st.data())
def test_mutations_of_the_default_only_ever_raise_config_error(data: st.DataObject) -> None:
    document = tomllib.loads(REPO_TOML)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        section = data.draw(st.sampled_from([*SECTIONS]))
        table = document.setdefault(section, {})  # a section the file leaves out, too
        if isinstance(table, list):
            table = table[data.draw(st.integers(min_value=0, max_value=len(table) - 1))]
        key = data.draw(st.sampled_from(sorted(field_hints(SECTIONS[section]))) | keys)
        if data.draw(st.booleans()) and key in table:
            del table[key]
        else:
            table[key] = data.draw(values)
    read(to_toml(document))


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=6),
       st.text(max_size=40))
def test_line_edits_of_the_default_only_ever_raise_config_error(
        cuts: list[int], inserted: str) -> None:
    lines = REPO_TOML.splitlines(keepends=True)
    for cut in cuts:
        index = cut % len(lines)
        lines[index] = inserted + "\n" if cut % 2 else ""
    read("".join(lines))


def test_the_writer_round_trips() -> None:
    document = {"cluster": {"name": "x\n\"y\\", "n": [1, 2.5, True]}, "hosts": [{"a": {}}]}
    assert tomllib.loads(to_toml(document)) == document
