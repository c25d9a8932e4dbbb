"""Run names: ``[run] name`` and ``corral run --name`` name a run next to its unique id."""

from __future__ import annotations

from pathlib import Path

import pytest

import console.cli as cli
from profiles.user_errors import UsageError
from remote.config.cluster import ConfigError
from remote.config.read import load_cluster
from remote.records.runs import find_runs, local_run_dir, read_run_info
from remote.run.controller import SshRunController


def _toml(root: Path, run: str = "") -> Path:
    path = root / "cluster.toml"
    path.write_text(f"""
[cluster]
name = "nm"
master = "one"
run_root = "{root / 'runs'}"
[[hosts]]
name = "one"
address = "local"
[run]
steps = 5
{run}
""", encoding="utf-8")
    return path


async def test_the_name_comes_from_the_file_or_the_flag_and_resume_keeps_it(
        tmp_path: Path) -> None:
    config = load_cluster(_toml(tmp_path, 'name = "baseline"'))
    controller = SshRunController(config)
    try:
        first = await controller.start()  # nothing launches until its events are read
        second = await controller.start(name="lr 0.1 + warmup")
        # Only a run with a checkpoint can be resumed: give the second one a file.
        checkpoints = local_run_dir(config, second.run_id) / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "step-00000003.pt").write_bytes(b"x")
        resumed = await controller.start(resume=True)
    finally:
        await controller.aclose()
    assert first.name == "baseline" and second.name == "lr 0.1 + warmup"
    assert first.run_id != second.run_id
    assert read_run_info(config, second.run_id).name == "lr 0.1 + warmup"
    assert resumed.run_id == second.run_id and resumed.name == "lr 0.1 + warmup"
    # A name finds its newest run; the id stays the unique handle.
    assert [r.run_id for r in find_runs(config, ["baseline"])] == [first.run_id]


async def test_a_bad_name_is_refused_naming_the_key_or_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[run\] name.*must not be empty"):
        load_cluster(_toml(tmp_path, 'name = "  "'))
    config = load_cluster(_toml(tmp_path))
    controller = SshRunController(config)
    try:
        with pytest.raises(UsageError, match="--name 'a\\\\tb': must be printable"):
            await controller.start(name="a\tb")
    finally:
        await controller.aclose()


def test_status_lists_the_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = _toml(tmp_path)

    async def start() -> None:
        controller = SshRunController(load_cluster(path))
        try:
            await controller.start(name="nightly")
        finally:
            await controller.aclose()

    asyncio.run(start())
    assert cli.main(["-c", str(path), "status"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "nightly" in out
