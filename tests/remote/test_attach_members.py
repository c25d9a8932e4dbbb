"""A follower that took over a run after a host left (``corral attach`` once ``corral run`` was
killed) counts the run's hosts as the record has them, not all of cluster.toml's: when another
host leaves, the one that left before stays out of the record, and a ``corral join`` of it is
taken in rather than forgotten as a host in the run already; a resumed run, launched on every
host again, records none of them as left (found by the chaos run, bench/chaos.py seed 4:
``the record's hosts ['n1', 'n3'] are not the run's ['n1']``, then ``corral join n3`` refused
with "n3 is in run … already")."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, local_run_dir
from remote.run import controller as controller_module
from remote.run import lifecycle as sig
from remote.run.actions import ForgetJoin, TailJoiner
from remote.run.controller import SshRunController
from remote.run.decide import decide
from remote.run.handle import SshRunHandle
from remote.run.record_changes import RecordMembers
from tests.remote.runkit import local_cluster, tiny_run
from trainer.events import MembershipEvent

RUN_ID = "local-20261129-120000-a1b2c3"


def _left(host: str) -> sig.MembershipSeen:
    return sig.MembershipSeen(MembershipEvent(
        t=1.0, rank=0, generation=2, step=24, change="left", hosts=(host,),
        cause="unreachable", world_size=1, seconds_to_step=0.5))


def test_an_attached_follower_keeps_a_host_that_left_before_out_and_lets_it_join_again(
        tmp_path: Path) -> None:
    config = local_cluster(tmp_path, ("h0", "h1", "h2"),
                           replace(tiny_run(500), on_host_loss="continue"))
    info = RunInfo(run_id=RUN_ID, cluster="local", state="running", started=time.time(),
                   hosts=("h0", "h1"), left_hosts=("h2",), membership_port=30255)
    local_run_dir(config, RUN_ID).mkdir(parents=True)
    handle = SshRunHandle(config, HostPool(config), info, launch=False)
    assert [h.name for h in handle.config.hosts] == ["h0", "h1"]
    left = decide(handle._state, _left("h1"), time.time())
    (record,) = [a for a in left.actions if isinstance(a, RecordMembers)]
    assert (record.hosts, record.left) == (("h0",), ("h1", "h2"))
    joined = decide(left.state, sig.JoinLaunched(host="h2", pgid=4242, asked=time.time()),
                    time.time())
    assert TailJoiner("h2") in joined.actions and ForgetJoin("h2") not in joined.actions
    (record,) = [a for a in joined.actions if isinstance(a, RecordMembers)]
    assert (record.hosts, record.left) == (("h0", "h2"), ("h1",))


def test_a_resumed_run_is_launched_with_no_host_recorded_as_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = local_cluster(tmp_path, ("h0", "h1", "h2"),
                           replace(tiny_run(500), on_host_loss="continue"))
    previous = RunInfo(run_id=RUN_ID, cluster="local", state="stopped", started=time.time(),
                       hosts=("h0", "h1"), left_hosts=("h2",))

    async def resumable(*_: object) -> RunInfo:
        return previous

    async def nothing_live(*_: object, **__: object) -> None:
        return None

    monkeypatch.setattr(controller_module, "run_to_resume", resumable)
    monkeypatch.setattr(controller_module, "refuse_live", nothing_live)
    monkeypatch.setattr(controller_module, "newer_unfinished_runs", lambda *_: [])
    monkeypatch.setattr(controller_module, "with_recorded_script", lambda config, _: config)
    local_run_dir(config, RUN_ID).mkdir(parents=True)
    handle = asyncio.run(SshRunController(config).start(resume=RUN_ID))
    assert handle._info.hosts == ("h0", "h1", "h2") and handle._info.left_hosts == ()
    assert handle._state.left == frozenset()
