"""``corral check`` imports the user's task file on each host as the ranks will: a syntax
error, a package missing there, or a missing build function is one line naming the host and
the user's own file and line (not the pushed copy), before anything starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remote.api import RunStatus
from remote.config.read import load_cluster
from remote.events import CheckItem
from remote.run.controller import SshRunController

try:
    from runkit import run_processes, run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes, run_to_end  # type: ignore[no-redef]


def _cluster(tmp_path: Path, run: str) -> Path:
    """One local host "a"; ``run`` is the rest of the [run] table."""
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "t"\nrun_root = "{tmp_path}/runs"\n\n[[hosts]]\n'
                    f'name = "a"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work"\ngpus = 0\n\n[run]\nsteps = 2\n{run}',
                    encoding="utf-8")
    return path


def _task_cluster(tmp_path: Path, task_source: str) -> Path:
    (tmp_path / "mytask.py").write_text(task_source, encoding="utf-8")
    return _cluster(tmp_path, 'task = "mytask.py:build"\n')


def _causal_lm_cluster(tmp_path: Path, data: Path, eval_data: Path) -> Path:
    return _cluster(tmp_path, f'task = "causal_lm"\neval_data = "{eval_data}"\n'
                              f'task_options = {{ model = "tiny", data = "{data}" }}\n')


async def _check_item(path: Path, name: str) -> CheckItem:
    """``corral check``'s item ``name`` for the cluster at ``path``."""
    controller = SshRunController(load_cluster(path))
    try:
        report = await controller.check()
    finally:
        await controller.aclose()
    return next(i for i in report.items if i.name == name)


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
    item = await _check_item(_task_cluster(tmp_path, source), "task")
    file = tmp_path.resolve() / "mytask.py"
    assert (item.host, item.ok) == ("a", False)
    assert item.detail == detail.format(file=file) and item.hint == hint.format(file=file)
    assert ".corral" not in item.detail and "work/code" not in item.detail


async def test_a_causal_lm_data_file_missing_on_a_host_is_named(tmp_path: Path) -> None:
    present = tmp_path / "train.txt"
    present.write_text("some text\n\nmore text\n", encoding="utf-8")
    cluster = _causal_lm_cluster(tmp_path, present, tmp_path / "held-out.txt")
    item = await _check_item(cluster, "data")
    assert (item.host, item.ok) == ("a", False)
    assert item.detail == f"[run] eval_data = '{tmp_path}/held-out.txt': no such readable file on a"


GOOD_ROWS = ('{"prompt": "Q: red", "completion": " blue"}\n'
             '{"messages": [{"role": "user", "content": "hi"}, '
             '{"role": "assistant", "content": "hello"}]}\n')


async def test_good_data_files_pass_and_an_empty_one_is_named(tmp_path: Path) -> None:
    data, held_out = tmp_path / "train.jsonl", tmp_path / "held-out.txt"
    data.write_text(GOOD_ROWS, encoding="utf-8")
    held_out.write_text("a document\n", encoding="utf-8")
    item = await _check_item(_causal_lm_cluster(tmp_path, data, held_out), "data")
    assert item.ok, item.detail
    data.write_text("\n  \n", encoding="utf-8")
    item = await _check_item(_causal_lm_cluster(tmp_path, data, held_out), "data")
    assert not item.ok
    assert item.detail == f"[run] task_options.data: data file {data} is empty"


async def test_a_bad_data_row_is_named_by_file_and_line_and_the_run_launches_nothing(
        tmp_path: Path) -> None:
    """A run's pre-flight check names the bad row (file, line, the reader's words, the hint)
    and the run stops there: the check a run makes is ``corral check``'s, so one run proves
    both. One bad row: which rows are bad, and the words for each, are the reader's own, tested
    without a check in tests/trainer/test_causal_lm_task.py and test_lm_chat.py."""
    data, held_out = tmp_path / "train.jsonl", tmp_path / "held-out.jsonl"
    data.write_text(GOOD_ROWS, encoding="utf-8")
    held_out.write_text(GOOD_ROWS + "\n{not json\n", encoding="utf-8")  # line 4
    run_id, events = await run_to_end(load_cluster(_causal_lm_cluster(tmp_path, data, held_out)))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.detail.startswith("pre-flight check failed: a:data")
    assert final.report is not None
    shown = [i for i in final.report.failures() if i.name == "data"]
    assert [(i.host, i.ok) for i in shown] == [("a", False)]
    assert [i.detail.split(": ")[1] for i in shown] == [f"{held_out}:4"]
    assert shown[0].detail.startswith(f"[run] eval_data: {held_out}:4: not a JSON object")
    assert shown[0].hint == f"fix {held_out} on a (the ranks would stop at it)"
    assert not (tmp_path / "runs" / run_id / "metrics").exists()  # no rank started
    assert run_processes(run_id) == []
