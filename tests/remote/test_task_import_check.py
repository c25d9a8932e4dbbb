"""``corral check`` imports the user's task file on each host as the ranks will: a syntax
error, a package missing there, or a missing build function is one line naming the host and
the user's own file and line (not the pushed copy), before anything starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remote.config.cluster import load_cluster
from remote.events import CheckItem
from remote.run.controller import SshRunController


def _cluster(tmp_path: Path, task_source: str) -> Path:
    (tmp_path / "mytask.py").write_text(task_source, encoding="utf-8")
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "t"\nrun_root = "{tmp_path}/runs"\n\n[[hosts]]\n'
                    f'name = "a"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work"\ngpus = 0\n\n'
                    '[run]\nsteps = 2\ntask = "mytask.py:build"\n', encoding="utf-8")
    return path


async def _task_item(path: Path) -> CheckItem:
    controller = SshRunController(load_cluster(path))
    try:
        report = await controller.check()
    finally:
        await controller.aclose()
    return next(i for i in report.items if i.name == "task")


@pytest.mark.parametrize(("source", "detail", "hint"), [
    ("import torch\n\ndef build(options:\n    pass\n",
     "{file}:3: syntax error: '(' was never closed", "fix {file}"),
    ("import a_package_absent_here\n\ndef build(options):\n    pass\n",
     "importing {file} failed: {file}:1: ModuleNotFoundError: No module named "
     "'a_package_absent_here'", "install the missing package on a (or change {file})"),
    ("def bild(options):\n    pass\n",
     "task file {file} has no function build(options) (it defines bild)", "fix {file}"),
])
async def test_a_broken_task_file_is_one_line_naming_the_host_and_the_users_file(
        tmp_path: Path, source: str, detail: str, hint: str) -> None:
    item = await _task_item(_cluster(tmp_path, source))
    file = tmp_path.resolve() / "mytask.py"
    assert (item.host, item.ok) == ("a", False)
    assert item.detail == detail.format(file=file) and item.hint == hint.format(file=file)
    assert ".corral" not in item.detail and "work/code" not in item.detail


async def test_a_causal_lm_data_file_missing_on_a_host_is_named(tmp_path: Path) -> None:
    present = tmp_path / "train.txt"
    present.write_text("some text\n\nmore text\n", encoding="utf-8")
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "t"\nrun_root = "{tmp_path}/runs"\n\n[[hosts]]\n'
                    f'name = "a"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work"\ngpus = 0\n\n[run]\nsteps = 2\n'
                    f'task = "causal_lm"\neval_data = "{tmp_path}/held-out.txt"\n'
                    f'task_options = {{ model = "tiny", data = "{present}" }}\n',
                    encoding="utf-8")
    controller = SshRunController(load_cluster(path))
    try:
        report = await controller.check()
    finally:
        await controller.aclose()
    item = next(i for i in report.items if i.name == "data")
    assert (item.host, item.ok) == ("a", False)
    assert item.detail == f"[run] eval_data = '{tmp_path}/held-out.txt': no such readable file on a"
