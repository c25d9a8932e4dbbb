"""The ``corral`` command line: options, errors without tracebacks, exit codes, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import console.cli as cli
import console.session as session
from console.cli_parser import build_parser
from remote.api import CheckItem, CheckReport, RunEvent, RunStatus, StopReport
from tests.fake_runs import HOLD, FakeController, FakeHost, FakeRun, scripted_run

ROOT = Path(__file__).resolve().parents[2]
HOSTS = (FakeHost(name="fast"), FakeHost(name="slow", slowdown=2.0))


@pytest.fixture
def controller(monkeypatch: pytest.MonkeyPatch) -> FakeController:
    fake = FakeController(hosts=HOSTS, script_options={"steps": 8})
    monkeypatch.setattr(session, "open_controller", lambda path: fake)
    return fake


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


def test_every_subcommand_and_option_is_in_docs_cli_md() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert set(subcommands()) == {"aim", "attach", "check", "console", "export", "fetch",
                                  "init", "join", "leave", "logs", "mlflow", "profile",
                                  "report", "run", "setup", "status", "stop", "tensorboard",
                                  "notify", "trust"}
    for name, sub in action.choices.items():  # type: ignore[union-attr]
        assert re.search(rf"^## `corral {name}\b", docs, re.M), f"corral {name} not in docs"
        for option in sub._actions:
            for flag in option.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in docs, f"{name} {flag} not in docs/cli.md"


@pytest.mark.parametrize("command", [[], *[[c] for c in
                                          ("aim", "attach", "check", "console", "export",
                                           "fetch", "init", "join", "leave", "mlflow",
                                           "profile", "report", "run", "setup", "status",
                                           "stop", "tensorboard", "trust")]])
def test_help_documents_every_option(command: list[str], capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "--config" in text
    if command == ["run"]:
        assert "--detach" in text and "--resume" in text and "--policy" in text
        assert "corral stop RUN" in text  # Ctrl-C behaviour is documented
    if command == ["attach"]:
        assert "--headless" in text


def test_a_config_mistake_exits_2_without_a_traceback(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "cluster.toml"
    bad.write_text('[cluster]\nname = "x"\nmastr = "a"\n', encoding="utf-8")
    assert cli.main(["-c", str(bad), "status"]) == 2  # returned: no exception escaped
    done = capsys.readouterr()
    assert done.err.startswith("corral: ")
    assert "mastr" in done.err and str(bad) in done.err.replace("\n", "")
    assert "Traceback" not in done.err + done.out


def test_a_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    code = cli.main(["-c", str(tmp_path / "nope.toml"), "status"])
    assert code == 2
    assert "nope.toml" in capsys.readouterr().err.replace("\n", "")


def test_run_follows_to_the_end_and_exits_0(controller: FakeController,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--policy", "static"]) == 0
    out = capsys.readouterr().out
    assert "run fake-1: completed" in out and "step 8/8" in out
    assert controller.calls[0] == ("start", {"resume": False, "policy": "static"})
    assert controller.closed


def test_a_failed_run_exits_1(controller: FakeController) -> None:
    controller.script_options["fail"] = (1, 3)
    assert cli.main(["run"]) == 1


def test_run_detach_returns_once_running(controller: FakeController,
                                         capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # --resume reads the file for a recorded script run's script (none here: corral's loop)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.toml").write_text((ROOT / "cluster.toml").read_text())
    assert cli.main(["-c", "other.toml", "run", "--detach", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "corral attach fake-1" in out and "completed" not in out
    assert controller.calls[0][1]["resume"] is True
    assert not controller.runs[0].finished


def test_check_prints_fixes_and_exits_1_on_failure(controller: FakeController,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    controller.check_report = CheckReport(items=(
        CheckItem(host="fast", name="reachable", ok=True, detail="connected"),
        CheckItem(host="slow", name="disk", ok=False, detail="0.2 GiB free",
                  hint="free space on slow"),
    ))
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "free space on slow" in out and "1 check(s) failed" in out
    controller.check_report = CheckReport(items=controller.check_report.items[:1])
    assert cli.main(["check"]) == 0


def test_attach_headless_follows_and_attach_opens_the_console(
    controller: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["attach", "fake-7", "--headless"]) == 0
    assert ("attach", {"run_id": "fake-7"}) in controller.calls
    opened: list[tuple[Path, str | None]] = []
    import console.app

    def run_console(path: Path, *, attach_run: str | None = None) -> int:
        opened.append((path, attach_run))
        return 0

    monkeypatch.setattr(console.app, "run_console", run_console)
    assert cli.main(["attach", "fake-7"]) == 0
    assert cli.main([]) == 0
    assert opened == [(Path("cluster.toml"), "fake-7"), (Path("cluster.toml"), None)]


class InterruptAt:
    """A run handle that sends this process SIGINT right after the event ``when`` matches."""

    def __init__(self, run: FakeRun, state: str) -> None:
        self.run = run
        self.run_id = run.run_id
        self.state = state

    async def events(self) -> AsyncIterator[RunEvent]:
        async for event in self.run.events():
            yield event
            if isinstance(event, RunStatus) and event.state == self.state:
                os.kill(os.getpid(), signal.SIGINT)

    async def stop(self, *, grace_s: float = 10.0) -> StopReport:
        return await self.run.stop(grace_s=grace_s)


def test_ctrl_c_while_running_detaches_and_leaves_the_run_going(
    controller: FakeController, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    run = FakeRun("live-1", scripted_run("live-1", hosts=HOSTS, steps=8, hold_at=3))
    handle = InterruptAt(run, "running")

    async def start(**_: object) -> InterruptAt:
        return handle

    monkeypatch.setattr(controller, "start", start)
    assert cli.main(["run"]) == cli.DETACHED_EXIT
    out = capsys.readouterr().out
    assert "detached from run live-1" in out and "corral stop live-1" in out
    assert run.stop_calls == 0
    assert controller.closed


def test_ctrl_c_before_the_launch_finished_stops_the_run(
    controller: FakeController, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    script = scripted_run("early-1", hosts=HOSTS, steps=8)
    cut = next(i for i, e in enumerate(script) if isinstance(e, RunStatus)
               and e.state == "pushing")
    run = FakeRun("early-1", [*script[:cut + 1], HOLD, *script[cut + 1:]])
    handle = InterruptAt(run, "pushing")

    async def start(**_: object) -> InterruptAt:
        return handle

    monkeypatch.setattr(controller, "start", start)
    assert cli.main(["run"]) == cli.DETACHED_EXIT
    assert run.stop_calls == 1
    assert "stopping it" in capsys.readouterr().out


def test_python_m_console_is_the_same_command() -> None:
    done = subprocess.run([sys.executable, "-m", "console", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--detach" in done.stdout


def test_script_options_without_the_double_dash_say_where_they_go(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--script", "train.py", "--lr", "1e-4"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "a script's own options go after --" in err
    assert "corral run --script train.py -- --lr 1e-4" in err


def test_a_code_folder_that_cannot_hold_the_script_is_named_as_the_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiles.user_errors import UsageError
    from remote.api import with_script
    from remote.config.read import load_cluster

    (tmp_path / "repo" / "sub").mkdir(parents=True)
    (tmp_path / "repo" / "sub" / "train.py").write_text("print('hi')\n")
    (tmp_path / "other").mkdir()
    config = load_cluster(Path(__file__).resolve().parents[2] / "cluster.toml")
    monkeypatch.chdir(tmp_path / "repo" / "sub")
    with pytest.raises(UsageError, match=r"^--code .*missing: no such folder$"):
        with_script(config, Path("train.py"), [], tmp_path / "missing")
    with pytest.raises(UsageError, match=r"^--code .*other: the script train.py is not inside"):
        with_script(config, Path("train.py"), [], tmp_path / "other")
    assert with_script(config, Path("train.py"), [], Path("..")).launch_dir == "sub"
