"""A browser tab's console (``corral console --served ROLE``, started by the --serve server):
it attaches to the cluster's live run; a ``view`` tab is read-only and sends no ``[notify]``
notices (the run's own follower does, once), a ``control`` tab is the whole console."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from console import app as console_app
from console.serve import run_served
from console.session import load_config
from remote.records.runs import local_run_dir

try:
    from tests.remote.recorded import info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]

CLUSTER = """\
[notify]
urls = ["json://127.0.0.1:9/hook"]
bell = true

[cluster]
name = "rep"
run_root = "{root}/runs"

[[hosts]]
name = "fast"
address = "local"
"""


@pytest.mark.parametrize("role", ["view", "control"])
def test_a_tab_follows_the_live_run_and_only_a_view_is_quiet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER.format(root=tmp_path), encoding="utf-8")
    config = load_config(path)
    for run in (info("rep-1-done", "completed"), info("rep-2-live", "running")):
        write_recorded(local_run_dir(config, run.run_id), run, synthetic_run(steps=2))
    opened: dict[str, Any] = {}
    monkeypatch.setattr(console_app, "run_console",
                        lambda config_path, **options: opened.update(options) or 0)
    assert run_served(path, role) == 0  # type: ignore[arg-type]
    assert opened["attach_run"] == "rep-2-live"
    assert opened["read_only"] is (role == "view")
    notify = opened["controller"].config.notify
    assert config.notify.enabled and notify.enabled is (role == "control")
