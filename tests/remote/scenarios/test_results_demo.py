"""Two short runs of the embedded demo (static, then dynamic) on local hosts: ``corral report``
compares them, and the TensorBoard files written live match the events."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import console.cli as cli
from remote.api import RunStatus
from remote.config.read import load_cluster
from remote.records.runs import local_run_dir
from remote.run.controller import SshRunController

try:
    from runkit import bounded
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded  # type: ignore[no-redef]

# alone: the dynamic run's throughput is compared with the static one's, run before it
# (tests/tiers.py)
pytestmark = [pytest.mark.slow, pytest.mark.alone]

REPO = Path(__file__).resolve().parents[3]
STEPS, REBALANCE_EVERY = 60, 5
"""Steps of each run, and the dynamic run's steps between decisions: the balancer settles in
the first third of the run (its fourth decision), so the steps after it, not the equal-split
start both runs share, set the whole-run figures the report compares. Half the cluster.toml's
10 between decisions: the same share of the run settled in half its steps
(docs/benchmarks/ci-time.md
"CI's time, round 5")."""


def demo_toml(root: Path, steps: int, rebalance_every: int | None = None) -> Path:
    """The repository's cluster.toml, ``steps`` long (and deciding every ``rebalance_every``
    steps, if given), with its runs under ``root``."""
    text = (REPO / "cluster.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^run_root = .*$', f'run_root = "{root / "runs"}"', text)
    text = re.sub(r"(?m)^steps = \d+", f"steps = {steps}", text)
    if rebalance_every is not None:
        text = re.sub(r"(?m)^rebalance_every = \d+", f"rebalance_every = {rebalance_every}",
                      text)
    text = re.sub(r"(?m)^samples = \d+", "samples = 1920", text)
    text = re.sub(r'(?m)^address = "local"(.*)$',
                  rf'address = "local"\1\npython = "{sys.executable}"', text)
    path = root / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def _run(path: Path, policy: str) -> str:
    controller = SshRunController(load_cluster(path))
    try:
        handle = await controller.start(policy=policy, name=f"demo-{policy}")
        events = [e async for e in bounded(handle.events())]
    finally:
        await controller.aclose()
        gc.collect()  # finish local transports while their loop is still open
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    return handle.run_id


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    root = tmp_path_factory.mktemp("demo")
    path = demo_toml(root, STEPS, REBALANCE_EVERY)
    static = asyncio.run(_run(path, "static"))
    dynamic = asyncio.run(_run(path, "dynamic"))
    yield path, static, dynamic
    shutil.rmtree(root, ignore_errors=True)


def test_report_shows_the_dynamic_runs_higher_throughput_and_its_moves(
        demo_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    path, static, dynamic = demo_runs
    assert cli.main(["-c", str(path), "report", "demo-static", "demo-dynamic", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["name"] for r in runs] == ["demo-static", "demo-dynamic"]
    assert [r["steps_done"] for r in runs] == [STEPS, STEPS]
    assert runs[0]["moves"] == [] and runs[1]["moves"], runs[1]["moves"]
    # Whole-run figures (not one step's): the balancer's moves pay for themselves.
    for figure in ("mean_samples_per_s", "p50_samples_per_s"):
        assert runs[1][figure] > runs[0][figure], (figure, runs[0][figure], runs[1][figure])
    # The slowest rank waits less once the balancer gave it less work... the fastest more.
    assert runs[1]["ranks"][0]["final_share"] > runs[0]["ranks"][0]["final_share"]

    assert cli.main(["-c", str(path), "report", static, dynamic]) == 0
    out = capsys.readouterr().out
    assert "runs compared" in out and "balancer moves" in out
    assert "demo-static" in out and "demo-dynamic" in out


def _jsonl(run_dir: Path, key: str) -> dict[int, float]:
    """Rank 0's ``key`` per step, from the host's own event file."""
    values = {}
    for line in (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines():
        data = json.loads(line)
        if data["event"] == "step":
            values[data["step"]] = data[key]
    return values


def _reasons(run_dir: Path) -> list[str]:
    lines = (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()
    return [d["reason"] for d in map(json.loads, lines) if d["event"] == "rebalance"]


def test_tensorboard_files_hold_one_loss_point_per_step_and_the_decisions(
        demo_runs: tuple[Path, str, str]) -> None:
    pytest.importorskip("tensorboard")
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, _, dynamic = demo_runs
    run_dir = local_run_dir(load_cluster(path), dynamic)
    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0,
                                                                          "tensors": 0})
    board.Reload()
    losses = {e.step: e.value for e in board.Scalars("loss/global")}
    expected = _jsonl(run_dir, "global_loss")
    assert sorted(losses) == list(range(1, STEPS + 1)) == sorted(expected)
    assert len(board.Scalars("loss/global")) == STEPS  # one point per step
    for step, value in expected.items():
        assert losses[step] == np.float32(value), step
    texts = [e.tensor_proto.string_val[0].decode() for e in board.Tensors("balancer/decisions")]
    reasons = _reasons(run_dir)
    assert reasons and len(texts) == len(reasons)
    assert all(reason in text for reason, text in zip(reasons, texts, strict=True))
    tags = board.Tags()["scalars"]
    for tag in ("throughput/cluster_samples_per_s", "throughput/efficiency",
                "rank_compute_s/rank2", "rank_share/rank1", "rank_utilisation/rank0"):
        assert tag in tags, tag


def test_an_old_run_is_converted_on_demand(
        demo_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, static, _ = demo_runs
    board_dir = local_run_dir(load_cluster(path), static) / "tensorboard"
    shutil.rmtree(board_dir)  # as if the run predates TensorBoard files
    assert cli.main(["-c", str(path), "tensorboard", "demo-static", "--write-only"]) == 0
    out = capsys.readouterr().out
    assert "demo-static" in out and "--logdir_spec" in out
    # The printed command is shell-quoted: pasted, it is one command whatever the run's name
    # or run_root holds (issue 41 item 7).
    printed = out.split("start TensorBoard with:", 1)[1].strip().splitlines()[0]
    words = shlex.split(printed)
    assert "--logdir_spec" in words and words[words.index("--logdir_spec") + 1].count(":") >= 1
    board = EventAccumulator(str(board_dir), size_guidance={"scalars": 0})
    board.Reload()
    assert [e.step for e in board.Scalars("loss/global")] == list(range(1, STEPS + 1))
