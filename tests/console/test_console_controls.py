"""The console's controls without an app: each key's handler returns what to show, and its
work is a coroutine, so a test drives start, stop, check, quit and the look back headless and
reads the notifications, questions and modals the app would render."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from console.controls import READ_ONLY, RunControls
from console.effects import (
    AskQuit,
    ChooseHost,
    Confirm,
    Effect,
    Effects,
    Exit,
    Notice,
    Redraw,
    ShowCheck,
    ShowStop,
    Work,
)
from console.model.run import RunModel
from console.past_runs import PastRuns
from console.session import Session
from profiles.user_errors import UsageError
from remote.api import CheckItem, CheckReport, HostStatus, StopReport
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from tests.fake_runs import FakeController


class Headless:
    """Renders effects as a test reads them: work runs as tasks (the app's workers),
    questions get the scripted answers, everything else is kept in ``shown``."""

    def __init__(self, answers: list[object] | None = None) -> None:
        self.shown: list[Effect] = []
        self.answers = list(answers or [])
        self.tasks: list[asyncio.Task[None]] = []

    def render(self, effects: Effects) -> None:
        for effect in effects:
            if isinstance(effect, Work):
                self.tasks.append(asyncio.ensure_future(self._perform(effect)))
                continue
            self.shown.append(effect)
            if isinstance(effect, Confirm) and self.answers.pop(0) == "yes":
                self.render(effect.then())
            elif isinstance(effect, AskQuit):
                self.render(effect.then(self.answers.pop(0)))

    async def _perform(self, work: Work) -> None:
        self.render(await work.work)

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Let the work run until ``condition()`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"condition not met within {timeout}s"
            await asyncio.sleep(0.01)

    def notices(self) -> list[str]:
        return [o.message for o in self.shown if isinstance(o, Notice)]


def _controls(controller: FakeController) -> tuple[RunControls, Session]:
    model = RunModel(cluster_name="lab", hosts=[h.name for h in controller.hosts],
                     policy="dynamic", total_steps=20, global_batch=60)
    session = Session(config=None, controller=controller, model=model, clock=lambda: 1.0)
    return RunControls(session), session


async def test_start_follows_the_run_to_its_end_and_says_so() -> None:
    controller = FakeController()
    controls, session = _controls(controller)
    screen = Headless()
    screen.render(controls.start())
    assert controls.busy == "starting"
    screen.render(controls.start())  # a second press while the first is under way
    await screen.until(lambda: any(isinstance(o, Redraw) for o in screen.shown))
    assert session.model.state == "completed" and controls.busy == ""
    assert screen.notices() == ["Busy starting; try again in a moment.",
                                "Run fake-1 completed."]
    assert controller.calls == [("start", {"resume": False, "policy": "dynamic"})]
    screen.render(controls.start())
    await screen.until(lambda: len(controller.runs) == 2)


async def test_stop_asks_first_then_stops_and_reports_what_was_left() -> None:
    controller = FakeController(script_options={"hold_at": 10})
    controls, session = _controls(controller)
    screen = Headless(answers=["no", "yes"])
    screen.render(controls.stop())
    assert screen.notices() == ["No live run to stop."]
    screen.render(controls.start())
    await screen.until(lambda: session.model.step == 9)
    screen.render(controls.stop())  # answered no: the run goes on
    assert controller.runs[0].stop_calls == 0 and controls.busy == ""
    controller.runs[0].stop_report = StopReport(run_id="fake-1", remaining={"beta": 2})
    screen.render(controls.stop())
    await screen.until(lambda: session.model.state == "stopped")
    assert controller.runs[0].stop_calls == 1
    assert next(o for o in screen.shown if isinstance(o, Confirm)).yes == "Stop"
    assert any(isinstance(o, ShowStop) and o.report.remaining == {"beta": 2}
               for o in screen.shown)


async def test_errors_and_check_reports_are_shown_not_raised() -> None:
    failing = CheckReport(items=(CheckItem(host="alpha", name="disk", ok=False, detail="full"),))
    controller = FakeController(start_error=UsageError("[run] steps: must be positive",
                                                       title="bad setting"),
                                check_report=failing)
    controls, session = _controls(controller)
    screen = Headless()
    screen.render(controls.start())
    await screen.until(lambda: bool(screen.notices()))
    notice = next(o for o in screen.shown if isinstance(o, Notice))
    assert (notice.title, notice.message, notice.severity) == (
        "bad setting", "[run] steps: must be positive", "error")
    assert "[run] steps: must be positive" in session.model.logs[-1].text
    screen.render(controls.check())
    await screen.until(lambda: any(isinstance(o, ShowCheck) for o in screen.shown))
    assert controls.last_check is failing and controls.busy == ""


async def test_quit_while_live_detaches_and_says_how_to_reattach() -> None:
    controller = FakeController(script_options={"hold_at": 10})
    controls, session = _controls(controller)
    screen = Headless(answers=["detach"])
    screen.render(controls.start())
    await screen.until(lambda: session.model.step == 9)
    screen.render(controls.quit())
    await screen.until(lambda: any(isinstance(o, Exit) for o in screen.shown))
    assert controller.closed and controller.runs[0].stop_calls == 0
    assert "corral attach fake-1" in controls.exit_note
    for task in screen.tasks:
        task.cancel()


def test_the_look_back_says_when_there_is_nothing_to_show() -> None:
    _, session = _controls(FakeController())
    past = PastRuns(session)
    assert [o.message for o in past.current_report() if isinstance(o, Notice)] == [
        "No run yet: start one (s) or pick a past one (h)."]
    assert [o.message for o in past.runs_screen() if isinstance(o, Notice)] == [
        "No run of this cluster is recorded on this machine yet."]


def test_r_on_a_script_run_says_the_script_resumes_from_its_own_snapshot(
        tmp_path: Path) -> None:
    def question(run: str) -> str:
        (tmp_path / "cluster.toml").write_text(
            '[cluster]\nname = "lab"\n[[hosts]]\nname = "a"\naddress = "local"\n' + run)
        (tmp_path / "train.py").write_text("print('hi')\n")
        session = Session(tmp_path / "cluster.toml", controller=FakeController(),
                          model=RunModel(cluster_name="lab", hosts=["a"], policy="static"))
        [confirm] = RunControls(session).restart()
        assert isinstance(confirm, Confirm)
        return confirm.question

    assert "where the script finds its own snapshot" in question('[run]\nscript = "train.py"\n')
    assert question("").endswith("from its newest checkpoint?")
    # without a cluster.toml behind the session: the general question, never an error
    [confirm] = RunControls(_controls(FakeController())[1]).restart()
    assert isinstance(confirm, Confirm) and "newest checkpoint" in confirm.question


def _lab(tmp_path: Path, *more: str, run: RunSection | None = None
         ) -> tuple[RunControls, Session]:
    """Controls over a fake run of alpha (the master), beta and gamma; cluster.toml has them
    and ``more`` hosts, and ``run`` (default: the defaults)."""
    controller = FakeController(script_options={"hold_at": 10})
    controls, session = _controls(controller)
    hosts = tuple(HostSection(name=n, address="local", python="python3")
                  for n in (*(h.name for h in controller.hosts), *more))
    session._config = ClusterConfig(path=tmp_path / "cluster.toml",
                                    cluster=ClusterSection(name="lab", master="alpha"),
                                    hosts=hosts, run=run or RunSection())
    return controls, session


async def _live_with_gamma_left(screen: Headless, controls: RunControls,
                                session: Session) -> None:
    """The run started and training (step 9), gamma having left it at step 5."""
    screen.render(controls.start())
    await screen.until(lambda: session.model.step == 9)
    session.model.apply(HostStatus(t=2.0, host="gamma", state="left",
                                   detail="left at step 5 (asked)"))


async def test_leave_asks_which_host_then_confirms_then_asks_the_remote_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    controls, session = _lab(tmp_path)
    asked: list[tuple[str, str]] = []

    async def leave_host(config: ClusterConfig, run_id: str, host: str) -> str:
        asked.append((run_id, host))
        return f"/runs/{run_id}/membership/leave-{host}"

    monkeypatch.setattr("remote.api.leave_host", leave_host)
    screen = Headless(answers=["no", "yes"])
    screen.render(controls.leave_host())
    assert screen.notices() == ["No live run to take a host out of."]
    await _live_with_gamma_left(screen, controls, session)
    screen.render(controls.leave_host())
    choice = next(o for o in screen.shown if isinstance(o, ChooseHost))
    assert choice.hosts == ("beta",)  # not the master's host, not one that left
    screen.render(choice.then("beta"))  # answered no: nothing asked
    assert asked == [] and controls.busy == ""
    screen.render(choice.then("beta"))
    await screen.until(lambda: bool(asked) and controls.busy == "")
    assert asked == [("fake-1", "beta")]
    assert "beta leaves run fake-1 at its next step boundary." in screen.notices()
    rows = {v.host: v for v in session.model.rank_and_host_rows()}
    assert (rows["gamma"].status, rows["gamma"].reason) == ("left", "left at step 5 (asked)")


async def test_join_offers_the_hosts_not_in_the_run_then_confirms_then_asks_the_remote_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    controls, session = _lab(tmp_path, "delta")
    asked: list[tuple[str, str]] = []

    async def join_host(config: ClusterConfig, run_id: str, host: str) -> float:
        asked.append((run_id, host))
        return 3.25

    monkeypatch.setattr("remote.api.join_host", join_host)
    screen = Headless(answers=["no", "yes"])
    screen.render(controls.join_host())
    assert screen.notices() == ["No live run to bring a host into."]
    await _live_with_gamma_left(screen, controls, session)
    screen.render(controls.join_host())
    choice = next(o for o in screen.shown if isinstance(o, ChooseHost))
    assert choice.hosts == ("gamma", "delta")  # one that left, one not in the run
    screen.render(choice.then("delta"))  # answered no: nothing asked
    assert asked == [] and controls.busy == ""
    screen.render(choice.then("delta"))
    await screen.until(lambda: bool(asked) and controls.busy == "")
    assert asked == [("fake-1", "delta")]
    assert "delta started in 3.2 s: it joins run fake-1 at a step boundary." in screen.notices()
    assert RunControls(session, read_only=True).join_host()[0].title == READ_ONLY  # type: ignore[union-attr]


async def test_leave_and_join_on_a_low_communication_run_say_a_rounds_end(
        tmp_path: Path) -> None:
    controls, session = _lab(tmp_path, "delta", run=RunSection(exchange="local"))
    screen = Headless()
    await _live_with_gamma_left(screen, controls, session)
    [leave] = next(o for o in controls.leave_host() if isinstance(o, ChooseHost)).then("beta")
    [join] = next(o for o in controls.join_host() if isinstance(o, ChooseHost)).then("delta")
    assert isinstance(leave, Confirm) and isinstance(join, Confirm)
    assert leave.question == ("Take beta out of run fake-1 at the end of the round under way? "
                              "It finishes the round; its change is in the round's average.")
    assert join.question.startswith("Check delta, push to it and let it into run fake-1 at a "
                                     "round's end (an outer step)? It becomes a new island")
