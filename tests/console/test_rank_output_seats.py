"""Rank output as a terminal would show it, in every seat: what the follower streams, the
console's log buffer, ``corral run``'s printed lines (a pipe, a colour terminal, NO_COLOR),
``corral logs`` and the report's last lines. The input is what torchrun's tee writes into a
host's launcher log for ``progress_bars.py`` and ``terminal_codes.py`` (the field cases):
every ``\\r`` of a bar ends a line, a state read before its end has the next prefix glued on."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

import console.cli as cli
from console.follow import follow_run
from console.model.run import RunModel
from remote.api import LogLine, RunStatus
from remote.config.cluster import HostSection
from remote.records.collected import CollectedCopy
from remote.records.history import rank_tail
from remote.records.log_search import host_log_path, run_log_lines
from remote.run.stream import tail_host
from remote.terminal_text import RankScreen
from tests.fake_runs import FakeRun

try:
    from recorded import info, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, write_recorded  # type: ignore[no-redef]


def state(rank: int, epoch: int, n: int) -> str:
    return (f"epoch {epoch} rank {rank}: {n * 100 // 40:3d}%|{'█' * (n // 4):<10}| {n}/40 "
            f"[00:01<00:01, 17.1it/s, loss=0.3]")


def bars_log() -> list[str]:
    """Three ranks, two epochs of a 40-step bar, a line after each epoch, glued as torch's
    tee glues them (a state read before its \\r, then another rank's or stream's piece)."""
    log: list[str] = []
    for epoch in range(2):
        log += [f"[rank{r}+0]:" for r in range(3)]
        for n in range(41):
            for r in range(3):
                log.append(f"[rank{r}+0]:{state(r, epoch, n)}")
        log[-1] += "[rank0+0]:loading the next epoch"  # glued after rank 2's last state
        log += ["[rank1+0]:loading the next epoch", "[rank2+0]:loading the next epoch"]
        log += [f"[rank{r}+0]:rank {r}: epoch {epoch} finished" for r in range(3)]
    log += ["[rank0+0]:rank 0: \x1b[32mINFO\x1b[0m colour test",
            "[rank0+0]:rank 0: col1\tcol2",
            "[rank0+0]:\x1b]0;title\x07rank 0: \x1b[2J\x1b[Hafter a clear-screen sequence"]
    return log


SETTLED = [
    *[f"h:{r} {state(r, 0, 40)}" for r in range(3)],
    "ranks 0–2 loading the next epoch",
    *[f"h:{r} rank {r}: epoch 0 finished" for r in range(3)],
    *[f"h:{r} {state(r, 1, 40)}" for r in range(3)],
    "ranks 0–2 loading the next epoch",
    *[f"h:{r} rank {r}: epoch 1 finished" for r in range(3)],
    "h:0 rank 0: INFO colour test",
    "h:0 rank 0: col1    col2",
    "h:0 rank 0: after a clear-screen sequence",
]
"""What every seat shows in the end: six bars at their last state, no line glued, no
prefix, control codes gone (colours only where the seat shows them)."""


def log_lines(t: float = 1.0) -> list[LogLine]:
    screen = RankScreen()
    return [LogLine(t=t, host="h", rank=s.rank, text=s.text, bar=s.bar, replaces=s.replaces)
            for raw in bars_log() for s in screen.feed(raw)]


class Tail:
    """A host's tailer as the follower reads it: every launcher-log line, then its end."""

    def __init__(self, host: HostSection) -> None:
        self.host = host

    async def stream(self, command: str) -> AsyncIterator[str]:
        offset = 0
        for text in bars_log():
            offset += len(text.encode()) + 1
            yield f"L\tlogs/h/launcher.log\t{offset}\t{text}"
        yield "F"
        yield "X\t0"


def test_the_follower_streams_each_rank_apart_and_each_bar_state_as_an_update(
        tmp_path: Path) -> None:
    host = HostSection(name="h", address="local", python=sys.executable, workdir=str(tmp_path))
    copy = CollectedCopy(tmp_path / "local", "h")

    async def follow() -> list[object]:
        return [item async for item in tail_host(Tail(host), "run", copy)]  # type: ignore[arg-type]

    lines = [item for item in asyncio.run(follow()) if isinstance(item, LogLine)]
    assert not any("[rank" in line.text for line in lines)
    new_lines = [line for line in lines if not line.replaces]
    assert len(new_lines) == 6 + 2 * 3 + 2 * 3 + 3  # bars, "loading", "finished", codes
    assert {line.rank for line in lines if line.bar} == {0, 1, 2}
    assert lines[-3].text == "rank 0: \x1b[32mINFO\x1b[0m colour test"  # colours kept
    assert lines[-1].text == "rank 0: after a clear-screen sequence"


def test_the_log_panel_buffer_holds_one_updating_bar_per_rank_and_folds_ranks() -> None:
    model = RunModel(cluster_name="c", hosts=("h",), policy="static")
    for line in log_lines():
        model.apply(line)
    from remote.api import plain

    assert [plain(entry.line) for entry in model.logs] == SETTLED
    assert model.logs_edited > 200  # the bars were updated in place


async def followed(console: Console) -> list[str]:
    script = [*log_lines(), RunStatus(t=2.0, run_id="r", state="completed")]
    await follow_run(FakeRun("r", script), console=console)  # type: ignore[arg-type]
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line for line in out.splitlines() if line.startswith("h:")]


async def printed_on_a_terminal() -> str:
    """All ``corral run`` wrote to a colour terminal (rich's own cursor codes included)."""
    tty = Console(file=io.StringIO(), width=400, force_terminal=True, color_system="standard")
    script = [*log_lines(), RunStatus(t=2.0, run_id="r", state="completed")]
    await follow_run(FakeRun("r", script), console=tty)  # type: ignore[arg-type]
    return tty.file.getvalue()  # type: ignore[attr-defined,no-any-return]


async def test_corral_run_prints_each_bar_once_and_colours_only_on_a_colour_terminal() -> None:
    pipe = Console(file=io.StringIO(), width=400, force_terminal=False, color_system=None)
    printed = await followed(pipe)
    # a bar shows once its rank says something else: it will not change any more there
    expected = [f"h:{r} | {line}" for epoch in range(2) for r in range(3)
                for line in (state(r, epoch, 40), "loading the next epoch")]
    expected[6:6] = [f"h:{r} | rank {r}: epoch 0 finished" for r in range(3)]
    expected += [f"h:{r} | rank {r}: epoch 1 finished" for r in range(3)]
    expected += ["h:0 | " + line[4:] for line in SETTLED[-3:]]
    assert printed == expected
    assert not any("\x1b" in line for line in printed)
    coloured = await printed_on_a_terminal()
    assert "\x1b[32mINFO" in coloured
    assert "\x1b[2J" not in coloured and "\x1b]0;" not in coloured


async def test_no_color_strips_the_ranks_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = await printed_on_a_terminal()
    assert "colour test" in out and "\x1b[32m" not in out


def recorded_run(root: Path) -> Path:
    run_dir = root / "runs" / "rep-bars"
    write_recorded(run_dir, info("rep-bars", "completed"), [])
    path = host_log_path(run_dir, "fast")
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"{line}\n" for line in bars_log()), encoding="utf-8")
    return run_dir


def test_corral_logs_and_the_report_show_the_settled_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = recorded_run(tmp_path)
    settled = [line.replace("h:", "fast:", 1) for line in SETTLED]
    assert [line.line for line in run_log_lines(run_dir, ["fast"])] == settled
    assert rank_tail(run_dir, "fast", 1, keep=3) == [
        state(1, 1, 40), "loading the next epoch", "rank 1: epoch 1 finished"]
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\nname = "rep"\nmaster = "fast"\n'
                      f'run_root = "{tmp_path / "runs"}"\n'
                      '[[hosts]]\nname = "fast"\naddress = "local"\n'
                      '[[hosts]]\nname = "slow"\naddress = "local"\n', encoding="utf-8")
    assert cli.main(["-c", str(config), "logs", "rep-bars", "--host", "fast"]) == 0
    assert capsys.readouterr().out.splitlines() == settled


def bars_run(run_id: str, **options: object) -> list[object]:
    """The scripted run with the field's bars and codes in front of it."""
    from tests.fake_runs import scripted_run

    return [*log_lines(), *scripted_run(run_id, **options)]


async def test_the_log_panel_draws_one_bar_per_rank_and_no_control_code() -> None:
    from console_helpers import make_app, screen_text, settle, wait_for

    from console.widgets.logs import LogsPanel
    from tests.fake_runs import FakeController

    app = make_app(FakeController(script=bars_run))
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        rows = [row.plain for row in app.query_one(LogsPanel).rows]
        assert sum("%|" in row for row in rows) == 6  # six bars, each at its last state
        assert sum("ranks 0–2 loading the next epoch" in row for row in rows) == 2
        assert not any("\x1b" in row or "[rank" in row for row in rows)
        assert "h:0 rank 0: col1    col2" in rows  # the tab expanded
        assert "│" in screen_text(app)  # the panels still drawn: no clear screen reached them
