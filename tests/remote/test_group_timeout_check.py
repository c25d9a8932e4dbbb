"""A script's own process-group timeout longer than ``[run] hang_limit`` is said before the
run starts (``corral check``, ``corral run``), read from the script's syntax tree: literal
``timedelta`` values only, nothing imported or run."""

from __future__ import annotations

import sys
from pathlib import Path

from remote.checks.group_timeout import GROUP_TIMEOUT_CHECK, group_timeout_items
from remote.config.read import parse_cluster
from remote.config.script_source import group_timeouts
from remote.config.task_code import user_code

SCRIPT = """\
import datetime as dt
from datetime import timedelta

import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

minutes = 90
dist.init_process_group("gloo", timeout=timedelta(hours=1))
dist.init_process_group(backend="gloo", timeout=dt.timedelta(seconds=10))
dist.init_process_group("gloo", None, timedelta(0, 7200))
kwargs = InitProcessGroupKwargs(timeout=timedelta(minutes=45, seconds=30))
dist.init_process_group("gloo", timeout=timedelta(minutes=minutes))
dist.init_process_group("gloo", timeout=timedelta(**{"hours": 3}))
Accelerator(kwargs_handlers=[kwargs])
"""


def test_literal_timeouts_are_read_with_their_lines(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    found = [(t.line, t.seconds, t.call) for t in group_timeouts(script)]
    assert found == [(9, 3600.0, "init_process_group"), (10, 10.0, "init_process_group"),
                     (11, 7200.0, "init_process_group"), (12, 2730.0, "InitProcessGroupKwargs")]


def test_a_script_that_does_not_parse_has_none(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("dist.init_process_group(timeout=timedelta(hours=1)\n")
    assert group_timeouts(script) == []
    assert group_timeouts(tmp_path / "missing.py") == []


def _config(tmp_path: Path, run: str, source: str = SCRIPT):  # type: ignore[no-untyped-def]
    (tmp_path / "train.py").write_text(source)
    return parse_cluster(
        f'[cluster]\nname = "s"\nrun_root = "{tmp_path}/runs"\n[[hosts]]\nname = "a"\n'
        f'address = "local"\npython = "{sys.executable}"\nworkdir = "{tmp_path}/work"\n'
        f"[run]\n{run}", path=tmp_path / "cluster.toml")


def test_the_check_names_hang_limit_for_each_timeout_longer_than_it(tmp_path: Path) -> None:
    config = _config(tmp_path, 'script = "train.py"\nhang_limit = 3000\n')
    items = group_timeout_items(config, user_code(config.run, config.path.parent))
    assert [i.name for i in items] == [GROUP_TIMEOUT_CHECK] * 2
    assert all(i.ok and i.detail.startswith("warning: ") for i in items)
    assert "train.py:9:" in items[0].detail and "(init_process_group, 3600 s)" in items[0].detail
    assert "raise [run] hang_limit to at least 3600" in items[0].detail
    assert "train.py:11:" in items[1].detail and "7200" in items[1].detail


def test_no_warning_within_hang_limit_without_one_or_for_a_task(tmp_path: Path) -> None:
    within = _config(tmp_path, 'script = "train.py"\nhang_limit = 7200\n')
    assert group_timeout_items(within, user_code(within.run, within.path.parent)) == []
    off = _config(tmp_path, 'script = "train.py"\nhang_limit = 0\n')
    assert group_timeout_items(off, user_code(off.run, off.path.parent)) == []
    task = _config(tmp_path, 'hang_limit = 60\n')
    assert group_timeout_items(task, user_code(task.run, task.path.parent)) == []


async def test_corral_run_says_it_before_the_launch(tmp_path: Path) -> None:
    from remote.events import LogLine
    from remote.hosts.pool import HostPool
    from remote.records.runs import RunInfo
    from remote.run.start import Launch, run_check

    config = _config(tmp_path, 'script = "train.py"\nhang_limit = 60\n',
                     source="import datetime, torch.distributed as dist\n"
                            "dist.init_process_group(timeout=datetime.timedelta(minutes=30))\n")
    pool = HostPool(config)
    launch = Launch(pool=pool, config=config, info=RunInfo(
        run_id="s-1", cluster="s", state="checking", started=0.0, hosts=("a",)))
    try:
        logged = [e.text for e in [e async for e in run_check(launch)]
                  if isinstance(e, LogLine)]
    finally:
        await pool.aclose()
    said = [line for line in logged if "longer than [run] hang_limit (60 s)" in line]
    assert len(said) == 1, logged
    assert "train.py:2:" in said[0] and "at least 1800" in said[0]
