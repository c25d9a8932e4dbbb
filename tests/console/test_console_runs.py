"""The runs screen, driven by keys: past runs of this cluster, one opened read-only with the
live console's panels, and reports."""

from __future__ import annotations

import sys
from pathlib import Path

from console_helpers import make_app, screen_text, settle, wait_for

from console.widgets.past_run import PastRunScreen
from console.widgets.report import ReportScreen
from console.widgets.runs import RunsScreen
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.records.runs import local_run_dir
from tests.fake_runs import FakeController

try:
    from tests.remote.recorded import info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]


def _config(root: Path) -> ClusterConfig:
    hosts = tuple(HostSection(name=n, address="local") for n in ("fast", "slow"))
    return ClusterConfig(path=root / "cluster.toml", hosts=hosts,
                         cluster=ClusterSection(name="rep", master="fast",
                                                run_root=str(root / "runs")))


def _record(config: ClusterConfig) -> None:
    done = info("rep-1-done", "completed", name="baseline")
    write_recorded(local_run_dir(config, done.run_id), done, synthetic_run(steps=20))
    failed = info("rep-2-failed", "failed", detail="slow rank 1 failed: exit 1")
    write_recorded(local_run_dir(config, failed.run_id), failed,
                   synthetic_run(steps=12, end="failed", error="RuntimeError: out of memory"))


async def test_the_runs_screen_lists_past_runs_and_opens_one_read_only(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _record(config)
    controller = FakeController()
    app = make_app(controller, config=config)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await settle(pilot)
        listing = screen_text(app)
        assert "rep-1-done" in listing and "baseline" in listing and "rep-2-failed" in listing
        # Newest first: the failed run is under the cursor; open the completed one below it.
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PastRunScreen))
        await settle(pilot)
        past = screen_text(app)
        assert "baseline · run rep-1-done" in past and "completed" in past
        assert "20/20 steps in" in past and "run averages" in past and "● loss" in past
        assert "→12/4" in past  # the balancer's move, as the live console shows it
        await pilot.press("s")  # read-only: nothing starts
        await settle(pilot)
        assert not any(name == "start" for name, _ in controller.calls)
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        await settle(pilot)
        assert "rep-1-done · baseline" in screen_text(app)
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("up", "o")  # the report of the run under the cursor: the failed one
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        await settle(pilot)
        report = " ".join(screen_text(app).split())
        assert "failed after step 12/12" in report and "RuntimeError: out of memory" in report
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1)


async def test_without_records_the_runs_key_says_so(tmp_path: Path) -> None:
    app = make_app(FakeController(), config=_config(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("h")
        await settle(pilot)
        assert len(app.screen_stack) == 1
        assert any("No run of this cluster" in n.message for n in app._notifications)
