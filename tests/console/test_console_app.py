"""Pilot tests: the console on the fake controller, driven by keys like an operator."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_helpers import check_report_text, make_app, screen_text, settle, wait_for

from console.widgets.modals import (
    CheckReportScreen,
    ConfirmScreen,
    HelpScreen,
    HostChoiceScreen,
    QuitScreen,
)
from profiles.user_errors import CorralError, UsageError
from remote.api import CheckItem, CheckReport, RankEvent, RunStatus
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from tests.fake_runs import FakeController, ScriptItem, scripted_run
from trainer.events import StepEvent


async def test_start_runs_and_panels_show_the_runs_numbers() -> None:
    controller = FakeController()
    app = make_app(controller)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        text = screen_text(app)
    assert controller.calls[0] == ("start", {"resume": False, "policy": "dynamic"})
    # The run has ended: whole-run averages, not the last step's values (89.5, 44.7, 23.7
    # samples/s per rank and 158 samples/s for the cluster at step 20).
    steps = [e.event for e in scripted_run("fake-1", hosts=controller.hosts)
             if isinstance(e, RankEvent) and isinstance(e.event, StepEvent)]
    rank_means = [sum(e.local_batch for e in steps if e.rank == r)
                  / sum(e.step_s for e in steps if e.rank == r) for r in range(3)]
    rank0 = [e for e in steps if e.rank == 0]
    cluster_mean = sum(60 for _ in rank0) / sum(e.step_s for e in rank0)
    assert "alpha" in text and all(f"{m:.1f}" in text for m in rank_means), rank_means
    assert "89.5" not in text and "run averages" in text
    # Throughput: the run's mean against its ideal, and the compute share; the header: the
    # run against its hosts alone (solo 100, 50 and 25 samples/s: Σ 175, fastest 100).
    assert f"mean {cluster_mean:.0f} samples/s" in text and "compute share 70%" in text
    assert f"{cluster_mean / 175:.0%} of Σ solo" in text
    assert f"{cluster_mean / 100:.2f}× fastest" in text
    # Balancer: the decision with predicted and measured gain.
    assert "20/20/20 → 34/17/9" in text and "pred +55%" in text and "meas +55%" in text
    # Header: progress, state and the run's totals.
    assert "20/20 steps in" in text and "completed" in text and "100%" in text


async def test_failing_rank_is_shown_failed_with_its_reason() -> None:
    app = make_app(FakeController(script_options={"fail": (2, 8)}))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "failed")
        await wait_for(pilot, lambda: any("rank 2 on gamma" in n.message
                                          for n in app._notifications))
        await settle(pilot)
        text = screen_text(app)
    assert "failed: RuntimeError: boom" in text


async def test_stop_asks_first_and_cancel_keeps_the_run() -> None:
    controller = FakeController(script_options={"hold_at": 10})
    app = make_app(controller)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 9)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert controller.runs[0].stop_calls == 0 and app.session.model.live
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.session.model.state == "stopped")
        await wait_for(pilot, lambda: app.controls.last_stop is not None)
        await settle(pilot)
        notes = [n.message for n in app._notifications]
    assert controller.runs[0].stop_calls == 1
    assert app.controls.last_stop is not None and app.controls.last_stop.clean
    assert any("no process left on any host" in n for n in notes)


async def test_quit_with_a_live_run_asks_and_can_leave_it_running() -> None:
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 4)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, QuitScreen))
        assert app.is_running
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running)
    assert controller.runs[0].stop_calls == 0 and controller.closed
    assert "corral attach fake-1" in app.controls.exit_note


async def test_quit_with_a_live_run_can_stop_it_and_shows_the_report() -> None:
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 4)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.is_running)
    assert controller.runs[0].stop_calls == 1 and controller.closed
    assert "no process left on any host" in app.controls.exit_note


async def test_quit_without_a_live_run_exits_at_once() -> None:
    controller = FakeController()
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running)
    assert controller.closed and app.controls.exit_note == ""


async def test_restart_confirms_then_stops_and_resumes_from_checkpoint() -> None:
    controller = FakeController(script_options={"hold_at": 12})
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 11)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: len(controller.runs) == 2)
        await wait_for(pilot, lambda: app.session.model.step == 11 and app.session.model.live)
    assert controller.runs[0].stop_calls == 1
    assert controller.calls[-1] == ("start", {"resume": True, "policy": "dynamic"})
    assert controller.runs[1].run_id == controller.runs[0].run_id


async def test_check_shows_the_report_table_with_fixes() -> None:
    report = CheckReport(items=(
        CheckItem(host="alpha", name="torch", ok=True, detail="2.13.0"),
        CheckItem(host="beta", name="torch", ok=False, detail="not installed",
                  hint="pip install torch==2.13.0 on beta"),
    ))
    controller = FakeController(check_report=report)
    app = make_app(controller)
    async with app.run_test(size=(120, 30)) as pilot:
        text = await check_report_text(pilot, "c")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CheckReportScreen))
    assert controller.calls == [("check", {})]
    assert "1 failed" in text and "FAIL" in text and "pip install torch==2.13.0 on beta" in text


async def test_run_that_fails_its_check_shows_the_report() -> None:
    report = CheckReport(items=(CheckItem(host="gamma", name="disk", ok=False, detail="1 MB",
                                          hint="free space in ~/.corral on gamma"),))

    def script(run_id: str, **_: object) -> list[ScriptItem]:
        return [RunStatus(t=1.0, run_id=run_id, state="failed", detail="check failed",
                          report=report)]

    app = make_app(FakeController(script=script))
    async with app.run_test(size=(120, 30)) as pilot:
        text = await check_report_text(pilot, "s")
    assert "free space in ~/.corral on gamma" in text


async def test_remote_errors_are_notifications_not_tracebacks() -> None:
    controller = FakeController(start_error=UsageError(
        "cluster.toml: [run] steps must be > 0 (got 0)", title="cluster.toml is invalid"))
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: bool(app._notifications))
        assert app.is_running and app.controls.busy == ""
        note = list(app._notifications)[-1]
    assert note.title == "cluster.toml is invalid" and note.severity == "error"
    assert "[run] steps must be > 0" in note.message


async def test_unexpected_errors_are_notified_too() -> None:
    app = make_app(FakeController(start_error=CorralError("host key of beta changed",
                                                          title="host key refused")))
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: bool(app._notifications))
        assert "host key of beta changed" in list(app._notifications)[-1].message


async def test_policy_key_cycles_and_the_next_start_uses_it() -> None:
    controller = FakeController()
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("p")
        assert app.session.model.next_policy == "static"
        await pilot.press("p")
        assert app.session.model.next_policy == "proportional"
        await pilot.press("s")
        await wait_for(pilot, lambda: bool(controller.calls))
    assert controller.calls[0] == ("start", {"resume": False, "policy": "proportional"})


async def test_start_while_a_run_is_live_is_refused() -> None:
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 4)
        await pilot.press("s")
        await pilot.pause()
    assert [c for c in controller.calls if c[0] == "start"] == [
        ("start", {"resume": False, "policy": "dynamic"})]


async def test_logs_filter_and_follow() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await pilot.press("slash")
        await pilot.press(*"gamma:2")
        await pilot.press("enter")
        await settle(pilot)
        logs = app.query_one("#logs")
        assert logs.shown and all("gamma:2" in e.line for e in logs.shown)  # type: ignore[attr-defined]
        assert "rank 2 ready" in screen_text(app)
        await pilot.press("l", "f")
        assert app.focused is not None and app.focused.id == "log-lines"
        assert not logs.follow  # type: ignore[attr-defined]
        assert "follow off" in str(logs.border_subtitle)


async def test_help_and_command_palette_offer_the_actions() -> None:
    app = make_app(FakeController())
    async with app.run_test() as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        policy = next(c for c in app.get_system_commands(app.screen)
                      if c.title == "Policy: static")
        policy.callback()
    for title in ("Start run", "Stop run", "Restart from checkpoint", "Pre-flight check",
                  "Focus logs", "Search logs", "Traceback", "Copy tail -F", "Help",
                  "Quit"):
        assert title in titles
    assert app.session.model.next_policy == "static"


async def test_attach_follows_the_named_run() -> None:
    controller = FakeController()
    app = make_app(controller, attach_run="lab-0412")
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.session.model.state == "completed")
    assert controller.calls[0] == ("attach", {"run_id": "lab-0412"})
    assert app.session.model.run_id == "lab-0412"


async def test_the_header_shows_the_runs_name() -> None:
    app = make_app(FakeController(run_name="nightly"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        text = screen_text(app)
    assert "nightly · run fake-1" in text


async def test_e_asks_which_host_leaves_then_confirms(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    controller = FakeController(script_options={"hold_at": 10})
    hosts = tuple(HostSection(name=h.name, address="local", python="python3")
                  for h in controller.hosts)
    config = ClusterConfig(path=tmp_path / "cluster.toml", hosts=hosts, run=RunSection(),
                           cluster=ClusterSection(name="lab", master="alpha",
                                                  run_root=str(tmp_path / "runs")))
    asked: list[str] = []

    async def leave_host(config: ClusterConfig, run_id: str, host: str) -> str:
        asked.append(host)
        return host

    monkeypatch.setattr("remote.api.leave_host", leave_host)
    app = make_app(controller, config=config)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 9)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, HostChoiceScreen))
        choice = app.screen
        assert isinstance(choice, HostChoiceScreen) and choice.names == ["beta", "gamma"]
        await pilot.click("#host-1")  # gamma
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: asked == ["gamma"])
        await wait_for(pilot, lambda: any("gamma leaves run" in n.message
                                          for n in app._notifications))
