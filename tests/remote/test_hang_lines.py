"""The hang detector says one line per change of state, and never calls a rank on a host it
cannot reach hung."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from profiles.user_errors import CorralError
from remote.events import RankEvent
from remote.hosts.command_errors import CompletedCommand
from remote.run.hang import HangGuard
from trainer.events import StartEvent, StepEvent

PIDS = {0: ("h0", 100), 1: ("h1", 101)}


class _Transport:
    def __init__(self, host: str, letter: str) -> None:
        self.host = type("Host", (), {"name": host})()
        self.letter = letter

    async def run(self, command: str, **_: Any) -> CompletedCommand:
        lines = "".join(f"{pid} {self.letter}\n" for h, pid in PIDS.values()
                        if h == self.host.name)
        return CompletedCommand(command=command, exit_status=0, stdout=lines, stderr="")


class _Pool:
    """Answers rank-state probes: every process waiting, or the host cannot be reached."""

    def __init__(self, down: set[str]) -> None:
        self.down = down

    async def gather(self, fn: Callable[[Any], Awaitable[Any]],
                     hosts: list[str]) -> dict[str, Any]:
        return {h: CorralError(f"{h} unreachable") if h in self.down
                else await fn(_Transport(h, "S")) for h in hosts}


def _start(rank: int) -> RankEvent:
    fields = {f: 0 for f in StartEvent.__dataclass_fields__ if f != "kind"}
    fields.update(t=0.0, rank=rank, host=PIDS[rank][0], pid=PIDS[rank][1], device="cpu",
                  device_name="cpu", backend="gloo", model="m", dataset="d", split=(1, 1),
                  policy="static", total_steps=10_000, resumed_from=None)
    return RankEvent(host=PIDS[rank][0], event=StartEvent(**fields))


def _step(rank: int, step: int) -> RankEvent:
    fields = {f: 0 for f in StepEvent.__dataclass_fields__ if f != "kind"}
    fields.update(t=float(step), rank=rank, step=step, step_s=1.0)
    return RankEvent(host=PIDS[rank][0], event=StepEvent(**fields))


async def _follow(guard: HangGuard, *, until: float, silent_from: int,
                  on: Callable[[float], None] | None = None) -> list[Any]:
    """Both ranks step once a second; rank 1 falls silent after ``silent_from`` s. Every
    line and failure the guard reports, checked after each event (as the follower does)."""
    said: list[Any] = []
    for rank in (0, 1):
        guard.observe(_start(rank), 0.0)
    now = 0.0
    while now < until:
        now += 1.0
        if on is not None:
            on(now)
        guard.observe(_step(0, int(now)), now)
        if now <= silent_from:
            guard.observe(_step(1, int(now)), now)
        await asyncio.sleep(0)  # the background probe answers
        lines, failure = guard.check(now)
        said += lines + ([failure] if failure is not None else [])
    guard.close()
    return said


async def test_a_silent_rank_is_said_once_however_often_the_others_step() -> None:
    guard = HangGuard(_Pool(set()), factor=3.0, limit_s=0)  # type: ignore[arg-type]
    said = await _follow(guard, until=80, silent_from=20)
    assert len(said) == 2, said  # "no step ... rank(s) 1", then its state
    assert said[0].startswith("no step for") and "rank 1 on h1 is waiting" in said[1]


async def test_a_rank_whose_host_cannot_be_asked_is_not_called_hung() -> None:
    guard = HangGuard(_Pool({"h1"}), factor=3.0, limit_s=30)  # type: ignore[arg-type]
    said = await _follow(guard, until=80, silent_from=20)
    assert not [s for s in said if not isinstance(s, str)], said  # no Failure
    assert len(said) == 2, said


async def test_a_host_being_reconnected_is_not_silent() -> None:
    guard = HangGuard(_Pool({"h1"}), factor=3.0, limit_s=30)  # type: ignore[arg-type]

    def cut(now: float) -> None:
        if now == 21:
            guard.host_reachable("h1", False, now)

    assert await _follow(guard, until=80, silent_from=20, on=cut) == []


async def test_a_rank_that_never_takes_a_first_step_is_named_past_the_hang_limit() -> None:
    """Issue 41 item 3: a rank stuck in its first collective (started, never stepped) ran
    past the hang limit; now it is silent once the limit passes and blamed with its state."""
    guard = HangGuard(_Pool(set()), factor=3.0, limit_s=60)  # type: ignore[arg-type]
    said: list[Any] = []
    for rank in (0, 1):
        guard.observe(_start(rank), 0.0)
    now = 0.0
    while now < 70 and not any(not isinstance(s, str) for s in said):
        now += 1.0
        await asyncio.sleep(0)  # the background probe answers
        lines, failure = guard.check(now)
        said += lines + ([failure] if failure is not None else [])
    guard.close()
    lines = [s for s in said if isinstance(s, str)]
    failures = [s for s in said if not isinstance(s, str)]
    assert lines and "no step for 61 s from rank(s) 0, 1" in lines[0], said
    assert len(failures) == 1 and 61 <= now <= 63, (now, said)
    assert "no first step" in failures[0].why and "hang_limit = 60 s" in failures[0].why
