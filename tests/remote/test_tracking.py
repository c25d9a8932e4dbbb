"""Recorded runs sent to MLflow (``corral mlflow``, ``TrackerWriter``), read back with MLflow's
own client: one point per step, the run's settings as params, the outcome as the run's status,
and a run continued (a follower killed, then another) in the same tracker run (an unreachable
tracker, filled in later: test_tracking_demo.py, on a real run)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import console.cli as cli
from remote.config.read import load_cluster

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")


def cluster_toml(root: Path, tracking: str) -> Path:
    path = root / "cluster.toml"
    path.write_text(f'[cluster]\nname = "rep"\nrun_root = "{root / "runs"}"\n'
                    '[[hosts]]\nname = "fast"\naddress = "local"\n'
                    '[[hosts]]\nname = "slow"\naddress = "local"\n'
                    '[run]\nglobal_batch = 16\npolicy = "dynamic"\n'
                    f"[tracking]\n{tracking}\n", encoding="utf-8")
    return path


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_missing_tracker_setting_or_package_is_named(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = cluster_toml(tmp_path, f'mlflow = "sqlite:///{tmp_path / "m.db"}"')
    write_recorded(tmp_path / "runs" / "r1", info("r1", "completed"), synthetic_run(steps=3))
    assert cli.main(["-c", str(path), "aim", "r1"]) == 2
    assert "[tracking] aim is not set" in capsys.readouterr().err


def test_check_names_the_missing_tracker_package(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from remote.checks import trackers
    from remote.records import tracker_packages

    config = load_cluster(cluster_toml(tmp_path, 'mlflow = "sqlite:///m.db"\naim = "aim"'))
    items = {item.name: item for item in trackers.tracker_items(config)}
    assert items["tracking-mlflow"].ok and items["tracking-mlflow"].host == "*"
    monkeypatch.setattr(tracker_packages.importlib.util, "find_spec",
                        lambda name: None if name == "aim" else object())
    missing = {item.name: item for item in trackers.tracker_items(config)}["tracking-aim"]
    assert not missing.ok and "corral[aim]" in missing.hint and "3.12" in missing.hint
