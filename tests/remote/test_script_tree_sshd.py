"""A ``src/`` layout whose entry script puts ``src/`` on ``sys.path`` runs over real sshd hosts
as under ``torchrun scripts/train.py`` from the repository's root: its own packages travel
with it, each host runs it from its own working directory in the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remote.api import RunStatus
from remote.config.cluster import RunSection
from trainer.run_layout import RunLayout

try:
    from runkit import run_processes
    from test_script_run_local import run_to_end
    from test_script_tree_local import SRC_LAYOUT, write
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.test_script_run_local import run_to_end  # type: ignore[no-redef]
    from tests.remote.test_script_tree_local import SRC_LAYOUT, write  # type: ignore[no-redef]

pytestmark = [pytest.mark.timeout(480)]


async def test_a_src_layout_runs_over_sshd(sshd_cluster, tmp_path: Path) -> None:
    cluster = sshd_cluster(2)
    repo = tmp_path / "repo"
    write(repo, SRC_LAYOUT)
    config = cluster.config(run=RunSection(script=str(repo / "scripts" / "train.py"),
                                           code=str(repo)), name="src")
    run_id, events = await run_to_end(config)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert run_processes(run_id) == []
    layout = RunLayout(Path(config.cluster.run_root) / run_id)
    for host in ("h0", "h1"):
        seen = json.loads(Path(layout.script_cwd(host), "out", "seen.json").read_text())
        assert seen == {"name": "utils of the repo", "host": host}
