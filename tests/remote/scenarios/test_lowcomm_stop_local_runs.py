"""The runs (slow tier) of what ``tests/remote/test_lowcomm_stop_local.py`` tests: ``corral stop``
of a low-communication run waits for the round under way (issue 59, item 3): docs/lowcomm.md
promises that a stop takes effect at the round's end, with its checkpoint; the stop used to kill
after its grace (torchrun's own 30 s at most), the round's work lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from remote.api import RankEvent, RunStatus
from remote.run.controller import SshRunController
from trainer.events import EventFormatError, RoundEvent, parse_event
from trainer.run_layout import IN_RUN_DIR

try:
    import runkit
except ImportError:  # collected as a package
    from tests.remote import runkit  # type: ignore[no-redef]
from tests.remote.test_lowcomm_stop_local import _config


@pytest.mark.slow  # starts torchrun
async def test_a_stop_mid_round_ends_at_the_rounds_end_with_a_checkpoint(tmp_path: Path) -> None:
    config = _config(tmp_path, round_steps=150)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        events = runkit.bounded(handle.events())
        first: RoundEvent | None = None
        async for event in events:
            if isinstance(event, RankEvent) and isinstance(event.event, RoundEvent):
                first = event.event
                break
        assert first is not None
        # Just after round 1: round 2 has all its time left, far more than a 1 s grace.
        stopping = asyncio.create_task(handle.stop(grace_s=1.0))
        rest = [e async for e in events]
        report = await stopping
    finally:
        await controller.aclose()
    assert report.clean, report
    final = rest[-1]
    assert isinstance(final, RunStatus) and final.state == "stopped", final
    rounds = [e.event for e in rest
              if isinstance(e, RankEvent) and isinstance(e.event, RoundEvent)]
    assert rounds and rounds[-1].step > first.step  # round 2 ran to its end
    saved = sorted(int(p.stem.split("-")[1]) for p in
                   (tmp_path / "runs" / handle.run_id / "checkpoints").glob("step-*.pt"))
    assert saved and saved[-1] == rounds[-1].step  # the stop's checkpoint, at round 2's end
    assert runkit.run_processes(handle.run_id) == []


def _host_rounds(run_dir: Path) -> list[RoundEvent]:
    """Rank 0's round events as its host wrote them (no copy of this machine's)."""
    events = run_dir / IN_RUN_DIR.events(0)
    try:
        lines = events.read_text().splitlines()
    except OSError:
        return []
    rounds = []
    for line in lines:
        try:
            event = parse_event(line)
        except EventFormatError:
            continue
        if isinstance(event, RoundEvent):
            rounds.append(event)
    return rounds


@pytest.mark.slow  # starts torchrun
async def test_a_detached_run_stopped_mid_round_ends_at_the_rounds_end_with_a_checkpoint(
        tmp_path: Path) -> None:
    """``corral run --detach`` leaves this machine with no round of the run; ``corral stop``
    then reads the newest round on the master's host and waits for the round under way as a
    followed run's stop does (issue 81, item 6)."""
    config = _config(tmp_path, round_steps=150)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        stream = handle.events()
        events = runkit.bounded(stream)
        async for event in events:
            if isinstance(event, RunStatus) and event.state == "running":
                break
        await events.aclose()
        await stream.aclose()  # detached: nothing copies the run's events any more
        run_dir = tmp_path / "runs" / handle.run_id
        deadline = asyncio.get_running_loop().time() + runkit.RUN_LIMIT_S
        while not (rounds := _host_rounds(run_dir)):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        stopper = await controller.attach(handle.run_id)  # `corral stop RUN`
        wait_s, said = await stopper.stop_wait(1.0)
        assert wait_s > 1.0 and "stop at the end of the round under way" in said
        report = await stopper.stop(grace_s=1.0, wait_s=wait_s)
    finally:
        await controller.aclose()
    assert report.clean, report
    last = _host_rounds(run_dir)[-1]
    assert last.step > rounds[0].step  # the round under way ran to its end
    saved = sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))
    assert saved and saved[-1] == last.step  # the stop's checkpoint, at that round's end
    assert runkit.run_processes(handle.run_id) == []
