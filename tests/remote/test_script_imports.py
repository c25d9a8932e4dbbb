"""The import pre-flight helps instead of gating: it follows the script's own modules, reports
optional imports (try/except, a condition, a function) without blocking, blocks on an
unconditional missing one naming the right distribution and the interpreter that answered, has
a warn-only key, and calls a module of the user's own that does not travel "not pushed" (never
a package installed beside a script that lies among installed packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote.checks.distributions import distribution
from remote.checks.import_scan import CONDITIONAL, IN_FUNCTION, UNDER_TRY, scan
from remote.checks.script_imports import judge_imports
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.read import parse_cluster
from remote.config.task_code import user_code
from remote.events import CheckItem
from remote.run.start import warning_lines

HEAD = '[cluster]\nname = "s"\n[[hosts]]\nname = "a"\naddress = "local"\n'

OPTIONAL_THREE_WAYS = """\
import os
import numpy
from helpers import make
try:
    import apex
except ImportError:
    apex = None
wandb_log = False
if wandb_log:
    import wandb


def main():
    import tensorboardX


if __name__ == "__main__":
    import hydra
    main()
"""


def _judged(host: HostSection, config: ClusterConfig, output: str,
            status: int) -> list[CheckItem]:
    """``judge_imports`` with the run's user code located as a launch locates it."""
    return judge_imports(host, config, user_code(config.run, config.path.parent), output, status)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _config(tmp_path: Path, run: str = "") -> ClusterConfig:
    return parse_cluster(HEAD + '[run]\nscript = "train.py"\n' + run,
                         path=tmp_path / "cluster.toml")


def test_the_scan_follows_local_modules_and_sorts_each_use(tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": OPTIONAL_THREE_WAYS,
                      "helpers.py": "import yaml\ntry:\n    import cv2\nexcept Exception:\n"
                                    "    cv2 = None\n"})
    uses = {u.name: (u.optional, u.where) for u in scan(tmp_path / "train.py", tmp_path).packages}
    assert uses == {
        "numpy": (None, "train.py:2"),
        "apex": (UNDER_TRY, "train.py:5"),
        "wandb": (CONDITIONAL, "train.py:10"),
        "tensorboardX": (IN_FUNCTION, "train.py:14"),
        "hydra": (None, "train.py:18"),  # the main guard is the script's own path
        "yaml": (None, "helpers.py:1"),  # what its own modules import counts too
        "cv2": (UNDER_TRY, "helpers.py:3"),
    }


def test_only_an_unconditional_missing_import_blocks_with_its_distribution(
        tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": OPTIONAL_THREE_WAYS, "helpers.py": "make = 1\n"})
    config = _config(tmp_path)
    host = config.hosts[0]
    everything_but_optional = '{"numpy": true, "hydra": true}'
    [warning, good] = _judged(host, config, everything_but_optional, 0)
    assert warning.ok and good.ok
    assert warning.detail.startswith("warning: optional, not found by ")
    for name, why in (("apex", UNDER_TRY), ("wandb", CONDITIONAL), ("tensorboardX", IN_FUNCTION)):
        assert f"{name} ({why}" in warning.detail
    assert " on a" in good.detail and "found by" in good.detail  # which interpreter answered

    [_, blocked] = _judged(host, config, '{"numpy": true, "hydra": false}', 0)
    assert not blocked.ok and "hydra (train.py:18)" in blocked.detail
    assert "cannot find" in blocked.detail and " on a" in blocked.detail
    assert "-m pip install hydra-core" in blocked.hint  # the distribution, not the module
    [_, warned] = _judged(host, _config(tmp_path, 'imports_check = "warn"\n'), '{}', 0)
    assert warned.ok and warned.detail.startswith("warning: ")


def test_famous_mismatched_names_map_to_their_distributions() -> None:
    # pip's names are case-insensitive: this machine's metadata may say PyYAML
    assert [distribution(m).lower() for m in ("cv2", "PIL", "sklearn", "yaml", "bs4", "hydra")] == [
        "opencv-python", "pillow", "scikit-learn", "pyyaml", "beautifulsoup4", "hydra-core"]
    assert distribution("torch") == "torch"  # from this machine's installed metadata


def test_a_src_layout_is_the_trees_own_and_what_it_imports_is_followed(tmp_path: Path) -> None:
    _write(tmp_path, {
        "train.py": "import sys\nsys.path.append('src')\nfrom training.loop import run\n"
                    "import utils\n",
        "src/training/__init__.py": "", "src/training/loop.py": "import numpy\n",
        "src/utils/__init__.py": "import a_missing_dependency\n"})
    uses = {u.name for u in scan(tmp_path / "train.py", tmp_path).packages}
    assert uses == {"numpy", "a_missing_dependency"}  # never "pip install training utils"


def test_a_module_of_the_users_own_that_does_not_travel_is_not_pushed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(repo, {"scripts/train.py": "import training\n", "src/training/__init__.py": ""})
    config = parse_cluster(HEAD + '[run]\nscript = "scripts/train.py"\ncode = "scripts"\n',
                           path=repo / "cluster.toml")
    [item] = _judged(config.hosts[0], config, "{}", 0)
    assert not item.ok and "your own training" in item.detail and "not pushed" in item.detail
    assert "[run] code" in item.hint and "pip" not in item.hint


def test_corrals_old_opt_in_name_taken_by_the_users_trainer_is_named(tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": "from trainer.integrations.hf import corral\n",
                      "trainer.py": "class Trainer: pass\n"})
    [item] = _judged(_config(tmp_path).hosts[0], _config(tmp_path), "{}", 0)
    assert not item.ok and "import it as corral.hf" in item.detail
    _write(tmp_path, {"train.py": "from corral.hf import corral\nimport trainer\n\n"})
    assert _judged(_config(tmp_path).hosts[0], _config(tmp_path), "{}", 0) == []


SFT_LIKE = "import trl\nimport transformers\nfrom accelerate import Accelerator\nimport numpy\n"
"""The imports of TRL's ``trl/scripts/sft.py`` as the package ships it, in their shapes."""


def _all_found(config: ClusterConfig) -> list[str]:
    """The failed or warning ``imports`` items when every host's Python finds every package."""
    names = [u.name for u in scan(*_script_and_folder(config)).packages]
    output = "{" + ", ".join(f'"{n}": true' for n in names) + "}"
    return [i.detail for i in _judged(config.hosts[0], config, output, 0)
            if not i.ok or i.detail.startswith("warning")]


def _script_and_folder(config: ClusterConfig) -> tuple[Path, Path]:
    code = user_code(config.run, config.path.parent)
    assert code is not None
    return code.source, code.folder


def _script_at(tmp_path: Path, script: Path) -> ClusterConfig:
    return parse_cluster(HEAD + f'[run]\nscript = "{script}"\n',
                         path=tmp_path / "project" / "cluster.toml")


def test_a_script_shipped_inside_installed_packages_is_not_given_their_neighbours(
        tmp_path: Path) -> None:
    # issue 19's case: a script inside site-packages (a venv's, Debian's dist-packages, a pip
    # --target folder known by its .dist-info) imports packages installed beside it
    for packages in ("venv/lib/python3.11/site-packages", "usr/lib/python3/dist-packages",
                     "target"):
        root = tmp_path / packages
        _write(root, {"trl/__init__.py": "", "trl/scripts/__init__.py": "",
                      "trl/scripts/sft.py": SFT_LIKE, "transformers/__init__.py": "",
                      "accelerate/__init__.py": "", "trl-1.0.dist-info/METADATA": ""})
        (tmp_path / "project").mkdir(exist_ok=True)
        config = _script_at(tmp_path, root / "trl/scripts/sft.py")
        assert {u.name for u in scan(*_script_and_folder(config)).packages} == {
            "trl", "transformers", "accelerate", "numpy"}, packages
        assert _all_found(config) == [], packages


def test_a_users_sibling_module_beside_a_plain_folder_is_still_not_pushed(
        tmp_path: Path) -> None:
    # the same layout without the marks of installed packages stays the user's own tree
    root = tmp_path / "checkout"
    _write(root, {"trl/__init__.py": "", "trl/scripts/sft.py": SFT_LIKE,
                  "transformers/__init__.py": ""})
    (tmp_path / "project").mkdir()
    [problem] = _all_found(_script_at(tmp_path, root / "trl/scripts/sft.py"))
    assert "your own trl" in problem and "transformers" in problem and "not pushed" in problem


def test_the_real_trl_sft_script_runs_the_import_check(tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    sft = Path(trl.__file__).parent / "scripts" / "sft.py"
    if not sft.is_file():
        pytest.skip("this trl ships no scripts/sft.py")
    (tmp_path / "project").mkdir()
    config = _script_at(tmp_path, sft)
    assert "transformers" in {u.name for u in scan(*_script_and_folder(config)).packages}
    assert _all_found(config) == []


def test_an_optional_import_missing_everywhere_is_one_warning_of_the_run(tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": "import numpy\ntry:\n    import apex\nexcept ImportError:\n"
                                  "    apex = None\n"})
    hosts = "".join(f'[[hosts]]\nname = "{n}"\naddress = "local"\n' for n in "bc")
    config = parse_cluster(HEAD + hosts + '[run]\nscript = "train.py"\n',
                           path=tmp_path / "cluster.toml")
    items = [item for host in config.hosts
             for item in _judged(host, config, '{"numpy": true}', 0)]
    [line] = warning_lines(items)
    assert line.startswith("corral: warning: optional, not found by ") and "apex" in line
    assert line.endswith("(on a, b, c)")


def test_an_interpreter_that_did_not_run_is_not_told_to_install_packages(
        tmp_path: Path) -> None:
    """On the old code a host whose ``python`` does not exist got, besides its python row,
    "train.py imports numpy, which ... cannot find" and a ``pip install`` with that python."""
    _write(tmp_path, {"train.py": "import numpy\n"})
    config = _config(tmp_path)
    (item,) = [i for i in _judged(config.hosts[0], config, "sh: 1: /nope/python: not found\n",
                                  127) if i.name == "imports"]
    assert not item.ok and item.detail.startswith("not checked: ") and "status 127" in item.detail
    assert "pip" not in item.hint and "numpy" not in item.detail
