"""What an attempt's end means, and every stop of an attempt: decided by the lifecycle loop,
never by the follower."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection
from remote.events import RunStatus, StopReport
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo
from remote.run.attempt_end import (
    kept_outcome,
    leftovers,
    settle_attempt,
    straggler_sweep_wanted,
)
from remote.run.failures import Cause, HostLost
from remote.run.follower import RunFollower
from remote.run.handle import SshRunHandle
from remote.run.lifecycle import (
    AttemptEnded,
    CauseSettled,
    Finding,
    LaunchFailed,
    Phase,
    RanksLinger,
    RunOutcome,
    StopCause,
)
from remote.run.record import RunRecord
from remote.run.stop import LAUNCH_STOP_GRACE_S, STOP_GRACE_ON_FAILURE_S

RUN = "rep-20260101-000001-aaaaaa"
FAILED = Finding(RunOutcome.FAILED, "h1 rank 1 died", failed_host="h1", failed_rank=1,
                 cause=Cause.OTHER)


def _info(state: str, detail: str = "") -> RunInfo:
    return RunInfo(run_id=RUN, cluster="rep", state=state, started=time.time(),
                   hosts=("h0", "h1"), detail=detail)


def _lost(host: str) -> HostLost:
    return HostLost(host=host, t=1.0, reason="unreachable")


def test_a_lost_host_is_a_suspect_but_does_not_make_the_stop_unclean() -> None:
    left = leftovers({"h1": _lost("h1")}, StopReport(run_id=RUN, unreachable=("h1",)))
    assert left.stop_clean and left.suspects == {"h1"}
    left = leftovers({}, StopReport(run_id=RUN, remaining={"h0": 2, "h1": 0}))
    assert not left.stop_clean and left.suspects == {"h0"}
    left = leftovers({}, None)
    assert left.stop_clean and left.suspects == set()


def test_a_followed_run_that_had_ended_keeps_its_recorded_outcome() -> None:
    recorded = _info("completed", "every rank completed")
    assert kept_outcome(FAILED, recorded, launching=False).outcome is RunOutcome.COMPLETED
    assert kept_outcome(FAILED, recorded, launching=False).detail == "every rank completed"
    assert kept_outcome(FAILED, recorded, launching=True) == FAILED  # it saw every event
    assert kept_outcome(FAILED, _info("running"), launching=False) == FAILED


@pytest.mark.parametrize(("launching", "stop", "swept"), [
    (True, None, True),  # every launcher ended by itself: stragglers are looked for
    (False, None, False),  # following is read-only
    (True, StopReport(run_id=RUN), False),  # the failure stop already looked
])
def test_only_the_launching_process_sweeps_a_failed_attempt_it_did_not_stop(
        launching: bool, stop: StopReport | None, swept: bool) -> None:
    ended = AttemptEnded(final=FAILED, lost={})
    assert straggler_sweep_wanted(ended, stop, launching=launching) is swept
    completed = AttemptEnded(final=Finding(RunOutcome.COMPLETED, "2 rank(s) finished"), lost={})
    assert not straggler_sweep_wanted(completed, None, launching=True)
    sweep = StopReport(run_id=RUN, remaining={"h0": 1}) if swept else None
    final, left = settle_attempt(ended, stop=stop, swept=sweep, launching=launching,
                                 info=_info("running"))
    assert final == FAILED  # what the sweep found is no part of the outcome
    assert left.suspects == ({"h0"} if swept else set())


def test_a_stop_that_left_processes_says_so_in_the_outcome() -> None:
    ended = AttemptEnded(final=FAILED, lost={})
    final, left = settle_attempt(ended, stop=StopReport(run_id=RUN, remaining={"h1": 3}),
                                 swept=None, launching=True, info=_info("running"))
    assert final.detail.startswith("h1 rank 1 died\n(") and "h1" in final.detail.splitlines()[1]
    assert not left.stop_clean and left.suspects == {"h1"}


def _handle(tmp_path: Path, *, launch: bool) -> tuple[SshRunHandle, list[tuple[float, Any]]]:
    """A handle on a run of two hosts in its running phase, whose stops are only recorded."""
    hosts = tuple(HostSection(name=f"h{i}", address=f"10.9.0.{i + 1}", user="u",
                              python="python3", workdir="/tmp/w", gpus=0, nproc=1)
                  for i in range(2))
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="rep", master="h0", run_root=str(tmp_path / "runs")),
        hosts=hosts, run=RunSection(),
        ssh=SshSection(known_hosts_file=str(tmp_path / "known_hosts"),
                       config_file=str(tmp_path / "no-ssh-config")))
    info = _info("running")
    handle = SshRunHandle(config, HostPool(config), info, launch=launch,
                          record=RunRecord(config, info, held=True))
    handle._life.phase = Phase.RUNNING
    handle._follower = RunFollower(config, handle._pool, info, launching=launch,
                                   stop=handle._stop)
    stops: list[tuple[float, Any]] = []

    async def recorded_stop(*, grace_s: float, hosts: list[str] | None = None,
                            pool: Any = None) -> StopReport:
        stops.append((grace_s, hosts))
        return StopReport(run_id=RUN)

    handle._stop_hosts = recorded_stop  # type: ignore[method-assign]
    return handle, stops


def test_the_loop_decides_and_makes_every_stop_of_an_attempt(tmp_path: Path) -> None:
    async def decide() -> None:
        handle, stops = _handle(tmp_path, launch=True)
        said = await handle._decide(RanksLinger(left=("h1",), waited_s=61.0))
        assert "processes on h1 have not exited; ending them" in said[0].text  # type: ignore[union-attr]
        assert handle._attempt_stop is not None and (await handle._attempt_stop).clean
        assert stops == [(STOP_GRACE_ON_FAILURE_S, ["h1"])]
        assert handle._follower is not None
        assert handle._follower.monitor.ended_after_done == 61.0  # the run still completed
        assert not handle._stop.requested

        handle, stops = _handle(tmp_path, launch=True)
        moved = await handle._decide(CauseSettled(cause=None, left=("h1",)))
        assert isinstance(moved[0], RunStatus) and moved[0].state == "stopping"
        assert handle._stop.by(StopCause.FAILURE)
        assert handle._attempt_stop is not None and (await handle._attempt_stop).clean
        assert stops == [(STOP_GRACE_ON_FAILURE_S, ["h1"])]

        handle, stops = _handle(tmp_path, launch=True)  # launchers that all ended by themselves
        ended = await handle._decide(AttemptEnded(final=FAILED, lost={}))
        assert isinstance(ended[-1], RunStatus) and ended[-1].state == "failed"
        assert stops == [(STOP_GRACE_ON_FAILURE_S, None)]  # the straggler sweep

        handle, stops = _handle(tmp_path, launch=True)
        handle._life.phase = Phase.LAUNCHING
        ended = await handle._decide(LaunchFailed("launch failed on h1: refused",
                                                  failed_host="h1", may_have_started=True))
        assert isinstance(ended[-1], RunStatus) and ended[-1].state == "failed"
        assert stops == [(LAUNCH_STOP_GRACE_S, None)]

        handle, stops = _handle(tmp_path, launch=False)  # following changes nothing
        assert await handle._decide(RanksLinger(left=("h1",), waited_s=61.0)) == []
        assert await handle._decide(CauseSettled(cause=None, left=("h1",))) == []
        await handle._decide(AttemptEnded(final=FAILED, lost={}))
        assert stops == []

    asyncio.run(decide())
