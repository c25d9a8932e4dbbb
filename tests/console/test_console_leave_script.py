"""The console's leave key on a script run as is (issue 78): it has no live membership, so the
dialog says what taking a host out means (a restart from the script's own newest checkpoint)
and how to ask for it, and asks the remote layer nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.effects import ChooseHost, Confirm
from remote.config.cluster import ClusterConfig, RunSection
from tests.console.test_console_controls import Headless, _lab, _live_with_gamma_left


async def test_a_script_runs_leave_dialog_says_it_is_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n", encoding="utf-8")
    controls, session = _lab(tmp_path, run=RunSection(script="train.py"))
    asked: list[str] = []

    async def leave_host(config: ClusterConfig, run_id: str, host: str) -> str:
        asked.append(host)
        return ""

    monkeypatch.setattr("remote.api.leave_host", leave_host)
    screen = Headless()
    await _live_with_gamma_left(screen, controls, session)
    screen.render(controls.leave_host())
    assert not [o for o in screen.shown if isinstance(o, ChooseHost | Confirm)]  # said first
    [said] = [n for n in screen.notices() if "script" in n]
    assert "no host can leave it live" in said and "newest checkpoint" in said
    assert "`corral leave HOST --restart`" in said
    assert asked == [] and controls.busy == ""


async def test_a_ddp_helper_scripts_leave_key_offers_the_hosts_live(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("from trainer.integrations.ddp import Shares\n",
                                       encoding="utf-8")
    controls, session = _lab(tmp_path, run=RunSection(script="train.py"))
    screen = Headless()
    await _live_with_gamma_left(screen, controls, session)
    screen.render(controls.leave_host())
    assert [o for o in screen.shown if isinstance(o, ChooseHost | Confirm)]  # a pick, live
    assert not [n for n in screen.notices() if "restart" in n]
