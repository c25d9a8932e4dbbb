"""``corral run --dry-run`` and ``corral check`` for a script run: what the run will do (ranks
per host, device, the script and its arguments), not corral-task facts that do not apply."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from console.plan_view import plan_renderable
from remote.checks.plan import LaunchFacts
from remote.checks.script_imports import script_keys_items
from remote.config import task_code
from remote.config.cluster import ClusterConfig
from remote.config.read import parse_cluster
from remote.config.task_code import user_code
from remote.hosts.pool import HostPool
from remote.run.preview import check_with_preview, preview

HOSTS = ('[cluster]\nname = "s"\nmaster = "fast"\n'
         '[[hosts]]\nname = "fast"\naddress = "local"\nnproc = 2\n'
         '[[hosts]]\nname = "slow"\naddress = "local"\nnproc = 1\n')


def _config(tmp_path: Path, run: str) -> ClusterConfig:
    (tmp_path / "train.py").write_text("print('hi')\n")
    return parse_cluster(HOSTS + "[run]\n" + run, path=tmp_path / "cluster.toml")


def _shown(config: ClusterConfig) -> str:
    facts = LaunchFacts(gpus={"fast": 0, "slow": 0}, interfaces={}, port=29400)
    plan = preview(config, facts, 29400, "ab" * 32, "s-20260101-000000-abcdef",
                   user_code(config.run, config.path.parent))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(plan_renderable(plan))
    return console.export_text()


def test_a_script_dry_run_shows_the_script_and_ranks_not_task_shares(tmp_path: Path) -> None:
    config = _config(tmp_path, 'script = "train.py"\nargs = ["--out", "a b"]\n'
                               'split = [32, 32, 32]\nglobal_batch = 96\nmodel = "resnet18"\n')
    text = _shown(config)
    assert "every rank runs your script: train.py --out 'a b'" in text
    assert "32" not in text.split("fast:")[0] and "fp32" not in text  # no task share/precision
    rows = [line for line in text.splitlines() if line.strip().startswith(("│ fast", "│ slow"))]
    assert len(rows) == 2 and "0,1" in rows[0] and "cpu" in rows[0] and "2" in rows[1]
    [item] = script_keys_items(config)
    assert item.ok and item.detail.startswith("warning")  # shown, never a failed check
    assert "[run] model is for corral's own tasks" in item.detail
    assert "split = [32, 32, 32] applies only if it fits" in item.detail


def test_a_task_run_keeps_its_shares_and_has_no_script_warning(tmp_path: Path) -> None:
    config = _config(tmp_path, "split = [32, 32, 32]\nglobal_batch = 96\n")
    text = _shown(config)
    assert "32,32" in text and "every rank runs your script" not in text
    assert script_keys_items(config) == []


def test_a_script_with_only_its_own_keys_has_no_warning(tmp_path: Path) -> None:
    config = _config(tmp_path, 'script = "train.py"\npolicy = "static"\nhang_limit = 60\n'
                               "max_restarts = 1\n")
    assert script_keys_items(config) == []


async def test_corral_run_logs_the_ignored_keys_once_before_the_launch(tmp_path: Path) -> None:
    import sys

    from remote.events import LogLine
    from remote.hosts.pool import HostPool
    from remote.records.runs import RunInfo
    from remote.run.start import Launch, run_check

    (tmp_path / "train.py").write_text("import torch\n")
    config = parse_cluster(
        f'[cluster]\nname = "s"\nrun_root = "{tmp_path}/runs"\n[[hosts]]\nname = "a"\n'
        f'address = "local"\npython = "{sys.executable}"\nworkdir = "{tmp_path}/work"\n'
        '[run]\nscript = "train.py"\nlr = 0.5\n', path=tmp_path / "cluster.toml")
    pool = HostPool(config)
    launch = Launch(pool=pool, config=config, info=RunInfo(
        run_id="s-1", cluster="s", state="checking", started=0.0, hosts=("a",)))
    try:
        logged = [e.text for e in [e async for e in run_check(launch)]
                  if isinstance(e, LogLine)]
    finally:
        await pool.aclose()
    said = [line for line in logged if "[run] lr is for corral's own tasks" in line]
    assert len(said) == 1, logged


def test_the_ignored_keys_are_those_written_whatever_their_value(tmp_path: Path) -> None:
    # steps set (so epochs is not), lr written at its default: named as written (issue 36)
    config = _config(tmp_path, 'script = "train.py"\nsteps = 50\nlr = 0.01\n'
                               'model = "simple_cnn"\n')
    [item] = script_keys_items(config)
    assert "[run] model, steps, lr are for corral's own tasks" in item.detail.replace(
        "steps, model", "model, steps"), item.detail
    assert "epochs" not in item.detail


def _count_locations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every location of the user's code from now on (``task_code._locate``'s calls)."""
    located: list[object] = []
    locate = task_code._locate

    def counted(*args: object, **kwargs: object) -> task_code.UserCode:
        located.append(args)
        return locate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(task_code, "_locate", counted)
    return located


async def test_a_dry_run_locates_the_script_once_for_every_host_and_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check, the push of each host, the imports probed and judged on each host, the data
    and the commands all read one ``UserCode``: the script is located once, not once each."""
    config = _config(tmp_path, 'script = "train.py"\n')
    located = _count_locations(monkeypatch)
    pool = HostPool(config)
    try:
        report = await check_with_preview(config, pool)
    finally:
        await pool.aclose()
    assert {item.host for item in report.items} >= {"fast", "slow"}  # both hosts were checked
    assert len(located) == 1


def test_a_launched_runs_follower_explains_missing_files_with_the_launchs_user_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower of a run this process launched takes the launch's ``UserCode`` (located
    once per launch); only a run attached from elsewhere locates its own."""
    from remote.run.follower import missing_file_explainer

    config = _config(tmp_path, 'script = "train.py"\n')
    launched = task_code.user_code(config.run, config.path.parent)
    assert launched is not None
    located = _count_locations(monkeypatch)
    assert missing_file_explainer(config, launched) is not None and located == []
    assert missing_file_explainer(config) is not None and len(located) == 1  # attached
