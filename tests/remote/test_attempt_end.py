"""What an attempt's end means: decided by the lifecycle loop, never by the follower."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import remote.run.attempt_end as attempt_end
from remote.events import StopReport
from remote.records.runs import RunInfo
from remote.run.attempt_end import kept_outcome, leftovers, settle_attempt
from remote.run.failures import Cause, HostLost
from remote.run.lifecycle import AttemptEnded, Finding, RunOutcome

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
        monkeypatch: pytest.MonkeyPatch, launching: bool, stop: StopReport | None,
        swept: bool) -> None:
    calls: list[str] = []

    async def fake_stop(pool: Any, run_dir: str, run_id: str, **_: Any) -> StopReport:
        calls.append(run_id)
        return StopReport(run_id=run_id, remaining={"h0": 1})

    monkeypatch.setattr(attempt_end, "stop_run", fake_stop)
    ended = AttemptEnded(final=FAILED, lost={}, stop=stop)
    final, left = asyncio.run(settle_attempt(ended, launching=launching, info=_info("running"),
                                             pool=None, run_dir="/runs/x"))  # type: ignore[arg-type]
    assert calls == ([RUN] if swept else [])
    assert final == FAILED
    assert left.suspects == ({"h0"} if swept else set())


def test_a_stop_that_left_processes_says_so_in_the_outcome() -> None:
    ended = AttemptEnded(final=FAILED, lost={},
                         stop=StopReport(run_id=RUN, remaining={"h1": 3}))
    final, left = asyncio.run(settle_attempt(ended, launching=True, info=_info("running"),
                                             pool=None, run_dir="/runs/x"))  # type: ignore[arg-type]
    assert final.detail.startswith("h1 rank 1 died\n(") and "h1" in final.detail.splitlines()[1]
    assert not left.stop_clean and left.suspects == {"h1"}
