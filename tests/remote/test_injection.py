"""Shell metacharacters in cluster.toml never execute.

Every free-text field that reaches a host's shell (python, workdir, run_root, data_dir, env
values, master_addr) gets a value full of ``;``, ``$(...)``, backticks, quotes, ``&&``, ``|``
and (where the config allows it) newlines, each trying to create a canary file. The paths are
real: directories with those names exist and hold a working interpreter, so a whole
``corral run``, ``corral stop`` and a profile go through them and must work *and* leave no
canary. Fields that must be plain words (host and cluster names, interface, env names, model)
are refused by the config instead. Local hosts run every command through ``sh -c``, exactly
as sshd hands it to the login shell.
"""

from __future__ import annotations

import json

import pytest

from remote.config.errors import ConfigError
from remote.config.read import parse_cluster

CANARY = "CANARY"
# No '/' (it is a directory name) and no control characters (the config refuses them in paths).


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@pytest.mark.parametrize(("section", "key"), [
    ("cluster", "name"), ("hosts", "name"), ("hosts", "interface"), ("run", "model"),
    ("run", "dataset"), ("cluster", "master_addr"), ("hosts", "address"), ("hosts", "user"),
])
def test_fields_that_must_be_words_refuse_metacharacters(section: str, key: str) -> None:
    values: dict[str, dict[str, object]] = {
        "cluster": {"name": "c", "master": "a"},
        "hosts": {"name": "a", "address": "local", "gpus": 0},
        "run": {},
    }
    values[section][key] = f"a b;touch {CANARY};$(touch {CANARY})"
    if (section, key) == ("hosts", "user"):
        values["hosts"]["address"] = "h.example"
    text = "\n".join(
        (f"[[{name}]]" if name == "hosts" else f"[{name}]") + "\n"
        + "".join(f"{k} = {toml_str(v) if isinstance(v, str) else v}\n" for k, v in table.items())
        for name, table in values.items())
    with pytest.raises(ConfigError) as raised:
        parse_cluster(text, path="cluster.toml")
    assert raised.value.exit_code == 2 and key in raised.value.message


def test_env_names_refuse_metacharacters() -> None:
    text = ('[cluster]\nname = "c"\nmaster = "a"\n[[hosts]]\nname = "a"\naddress = "local"\n'
            f'gpus = 0\nenv = {{ "X;touch {CANARY}" = "1" }}\n')
    with pytest.raises(ConfigError):
        parse_cluster(text, path="cluster.toml")
