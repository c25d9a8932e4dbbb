"""The logs panel's search, driven by keys: ``/`` a regex over every rank's lines of the run
on disk, ``n``/``N`` through the matches, ``t`` to the first traceback, ``y`` the tail -F
command copied, Esc back to the newest lines."""

from __future__ import annotations

import sys
from pathlib import Path

from console_helpers import make_app, screen_text, settle, wait_for

from console.widgets.logs import LogsPanel
from console.widgets.past_run import PastRunScreen
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.records.log_search import host_log_path
from remote.records.runs import local_run_dir
from tests.fake_runs import FakeController

try:
    from tests.remote.recorded import info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]

LOGS = {
    "fast": ["[rank0]:step 1 loss 2.0"] + [f"[rank0]:line {i}" for i in range(60)]
            + ["[rank0]:step 2 loss 2.5"],
    "slow": ["[rank0+1]:step 1 loss 3.0", "[rank0+1]:Traceback (most recent call last):",
             "[rank0+1]:RuntimeError: out of memory"],
}


def _failed_run(root: Path) -> ClusterConfig:
    hosts = tuple(HostSection(name=n, address="local") for n in ("fast", "slow"))
    config = ClusterConfig(path=root / "cluster.toml", hosts=hosts,
                           cluster=ClusterSection(name="rep", master="fast",
                                                  run_root=str(root / "runs")))
    failed = info("rep-2-failed", "failed", detail="slow rank 1 failed: exit 1")
    run_dir = local_run_dir(config, failed.run_id)
    write_recorded(run_dir, failed, synthetic_run(steps=4, end="failed", error="oom"))
    for host, lines in LOGS.items():
        path = host_log_path(run_dir, host)
        path.parent.mkdir(parents=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return config


async def test_search_steps_through_every_ranks_matches_on_disk(tmp_path: Path) -> None:
    app = make_app(FakeController(), config=_failed_run(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h", "enter")  # the runs screen; the newest run is under the cursor
        await wait_for(pilot, lambda: isinstance(app.screen, PastRunScreen))
        logs = app.screen.query_one(LogsPanel)
        await pilot.press("slash", *"loss 2.5|loss 3", "enter")
        await wait_for(pilot, lambda: logs.search is not None)
        search = logs.search
        assert search is not None
        assert [search.lines[i].line for i in search.matches] == [
            "fast:0 step 2 loss 2.5", "slow:1 step 1 loss 3.0"]  # not in the model's buffer
        assert "match 1/2" in str(logs.border_subtitle)
        await settle(pilot)
        assert "fast:0 step 2 loss 2.5" in screen_text(app)  # scrolled past 60 lines to it
        await pilot.press("n")
        assert "match 2/2" in str(logs.border_subtitle)
        await pilot.press("n")  # round past the end
        assert "match 1/2" in str(logs.border_subtitle)
        await pilot.press("N")
        assert search.line == search.matches[1]
        await pilot.press("escape")
        assert logs.search is None and logs.follow


async def test_t_shows_the_first_traceback_and_y_copies_its_hosts_tail(tmp_path: Path) -> None:
    app = make_app(FakeController(), config=_failed_run(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("h", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PastRunScreen))
        logs = app.screen.query_one(LogsPanel)
        await pilot.press("t")
        await wait_for(pilot, lambda: logs.search is not None)
        await settle(pilot)
        assert "first failure: slow:1 line 2" in str(logs.border_subtitle)
        assert "slow:1 Traceback (most recent call la" in screen_text(app)  # wrapped at 80
        await pilot.press("y")
        run_dir = tmp_path / "runs" / "rep-2-failed"
        assert app.clipboard == f"tail -F {run_dir}/logs/slow/launcher.log"


async def test_a_bad_regex_is_named_and_nothing_is_searched(tmp_path: Path) -> None:
    app = make_app(FakeController(), config=_failed_run(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PastRunScreen))
        await pilot.press("slash", *"loss [", "enter")
        await wait_for(pilot, lambda: bool(app._notifications))
        messages = [n.message for n in app._notifications]
        assert any("search 'loss [' is not a regular expression" in m for m in messages)
        assert app.screen.query_one(LogsPanel).search is None


def test_every_key_of_the_console_and_the_logs_is_in_the_help() -> None:
    from console.app import ConsoleApp
    from console.widgets.modals import HELP_TEXT

    lines = HELP_TEXT.splitlines()
    keys = {key for line in lines if line.startswith("  ") and not line.startswith("   ")
            for key in line[:10].replace(",", " ").split()}  # the key column
    keys |= {word for line in lines for word in line.split() if len(word) == 1}  # "there, f"
    for binding in (*ConsoleApp.BINDINGS, *LogsPanel.BINDINGS):
        key = getattr(binding, "key_display", None) or binding.key  # type: ignore[union-attr]
        if key != "escape":
            assert key in keys, f"{key} is not in the help screen"


async def test_t_opens_the_culprit_not_rank_0s_collateral_error(tmp_path: Path) -> None:
    config = _failed_run(tmp_path)
    victim = host_log_path(local_run_dir(config, "rep-2-failed"), "fast")
    victim.write_text(victim.read_text(encoding="utf-8") + "".join(
        f"[rank0]:{line}\n" for line in (
            "Traceback (most recent call last):",
            "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer")),
        encoding="utf-8")
    app = make_app(FakeController(), config=config)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("h", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PastRunScreen))
        logs = app.screen.query_one(LogsPanel)
        await pilot.press("t")  # the record names slow rank 1; fast:0 comes first in host order
        await wait_for(pilot, lambda: logs.search is not None)
        assert "first failure: slow:1 line 2 · collateral: fast:0" in str(logs.border_subtitle)
