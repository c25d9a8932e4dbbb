"""Reliability over real sshd hosts: a stranger holding the run's old process-group id is never
signalled, attaching changes nothing, run ids are matched whole, ``--resume`` picks a run it can
continue, a diverged run says so, and ``stop`` (on the handle, or from another controller as
``corral stop RUN`` would) leaves nothing of the run on any host."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

import remote.run.handle
from profiles.user_errors import CorralError
from remote.api import HostStatus, LogLine, RankEvent, RunEvent, RunStatus
from remote.config.cluster import HostSection
from remote.records.runs import RunInfo, read_run_info, write_run_info
from remote.run.controller import SshRunController
from trainer.events import StartEvent, StepEvent

try:
    from conftest import SSHD, SshdCluster
    from runkit import bounded, cut_ssh, run_processes, tiny_run, until_first_step
except ImportError:  # collected as a package
    from tests.remote.conftest import SSHD, SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import (  # type: ignore[no-redef]
        bounded,
        cut_ssh,
        run_processes,
        tiny_run,
        until_first_step,
    )

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
SLOWDOWN = 10.0
"""Hosts of a run that trains until the test ends it emulate a device this many times slower
(trainer/step/slowdown.py: a sleep after each step's compute): its ranks sleep most of the
seconds the test spends cutting, reconnecting and stopping instead of each taking a core.
No assertion there depends on the speed, and emulation changes no number the run computes."""


def slow_hosts(cluster: SshdCluster) -> list[HostSection]:
    """Every daemon of ``cluster`` as a host at ``SLOWDOWN``."""
    return [cluster.host(daemon.name, slowdown=SLOWDOWN) for daemon in cluster.hosts]


def stranger_with_pid(pid: int) -> subprocess.Popen[bytes]:
    """``setsid sleep`` whose PID (and so its process group) is ``pid``: the kernel hands out
    ``ns_last_pid + 1`` next. Other processes may take it first; then try again."""
    if os.geteuid() != 0 or not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("needs root to choose the next PID")
    for _ in range(200):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["setsid", "sleep", "1000"])
        if proc.pid == pid:
            deadline = time.monotonic() + 10
            while os.getpgid(pid) != pid:  # setsid(1) has not run yet
                assert time.monotonic() < deadline, "setsid did not make its own group"
                time.sleep(0.01)  # polling a condition with a deadline
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"PID {pid} kept being taken by other processes")


async def follow(handle) -> list[RunEvent]:
    return [event async for event in bounded(handle.events())]


async def test_a_diverged_run_fails_naming_it_and_its_stop_never_signals_a_stranger(
    sshd_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One host: the divergence, the stranger holding h0's recorded group id and the stops of
    # the finished run are one host's matter (each stop reaches every host of the run).
    cluster = sshd_cluster(1)
    config = cluster.config(run=replace(tiny_run(steps=50), lr=1e9, checkpoint_every=1))
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        final = (await follow(handle))[-1]
        assert isinstance(final, RunStatus) and final.state == "failed", final
        assert "diverged" in final.detail and "the loss is" in final.detail
        assert "not JSON compliant" not in final.detail
        assert run_processes(handle.run_id) == []
        run_dir = Path(config.cluster.run_root) / handle.run_id
        pgid = int((run_dir / "hosts" / "h0.pgid").read_text())
        stranger = stranger_with_pid(pgid)
        try:
            # `corral stop` of the finished run: the recorded group is no longer the run's.
            report = await (await controller.attach(handle.run_id)).stop(grace_s=1)
            assert report.clean, report
            assert stranger.poll() is None, "the stranger holding the old group id was killed"
            # Both ways a launcher can be gone: with its exit file (it ended by itself), and
            # without (killed, or the host rebooted), a stranger having the id either way.
            exit_file = run_dir / "hosts" / "h0.exit"
            if exit_file.exists():
                exit_file.unlink()
            else:
                exit_file.write_text("1\n")
            report = await (await controller.attach(handle.run_id)).stop(grace_s=1)
            assert report.clean, report
            assert stranger.poll() is None, "the stranger holding the old group id was killed"
            # Attaching to the failed run only reads: it stops nothing.
            stops: list[str] = []
            real_stop = remote.run.handle.stop_run

            async def recorded_stop(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
                stops.append(repr(args))
                return await real_stop(*args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(remote.run.handle, "stop_run", recorded_stop)
            again = (await follow(await controller.attach(handle.run_id)))[-1]
            assert isinstance(again, RunStatus) and again.state == "failed"
            assert stops == []
            monkeypatch.undo()

            info = read_run_info(config, handle.run_id)
            assert info.state == "failed" and "no process left" in info.cleanup
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        await controller.aclose()


async def test_resume_picks_the_newest_run_with_a_checkpoint(sshd_cluster) -> None:
    cluster = sshd_cluster(1)
    config = cluster.config(run=tiny_run(steps=2))
    controller = SshRunController(config)
    try:
        first = await controller.start()
        assert (await follow(first))[-1].state == "completed"  # type: ignore[union-attr]
        # A newer run that failed its pre-flight check: recorded, but nothing on the hosts.
        write_run_info(config, RunInfo(run_id=f"{first.run_id}x", cluster=config.cluster.name,
                                       state="failed", started=time.time() + 1,
                                       hosts=("h0",)))
        with pytest.raises(CorralError, match="no checkpoint"):
            await controller.start(resume=f"{first.run_id}x")
        longer = SshRunController(replace(config, run=tiny_run(steps=4)))
        try:
            resumed = await longer.start(resume=True)
            assert resumed.run_id == first.run_id
            events = await follow(resumed)
        finally:
            await longer.aclose()
    finally:
        await controller.aclose()
    assert events[-1].state == "completed"  # type: ignore[union-attr]
    starts = [e.event for e in events if isinstance(e, RankEvent) and not e.replayed
              and isinstance(e.event, StartEvent)]  # the record replayed first is the run before
    assert [s.step for s in starts] == [2]




async def test_two_runs_started_at_once_do_not_run_side_by_side_and_ids_match_whole(
    sshd_cluster
) -> None:
    """Also ``stop`` from another controller than the follower's, as ``corral stop RUN`` would
    from another process: TERM, grace, KILL, and nothing of the run left on either host."""
    cluster = sshd_cluster(2)
    config = cluster.config(run=tiny_run(steps=100000))
    first, second = (SshRunController(config) for _ in range(2))
    try:
        handles = [await first.start(), await second.start()]
        streams = [handle.events() for handle in handles]

        async def until_running_or_failed(events: AsyncIterator[RunEvent]) -> RunStatus:
            async for event in bounded(events):
                if isinstance(event, RunStatus) and event.state in ("running", "failed"):
                    return event
            raise AssertionError("the stream ended without a state")

        states = await asyncio.gather(*(until_running_or_failed(s) for s in streams))
        assert sorted(s.state for s in states) == ["failed", "running"], states
        refused = next(s for s in states if s.state == "failed")
        assert "another run is launching" in refused.detail, refused.detail
        running = handles[[s.state for s in states].index("running")]
        other = handles[1 - handles.index(running)]
        assert run_processes(other.run_id) == []

        # A partial or unknown run id is an error and touches no run.
        events = streams[handles.index(running)]
        await until_first_step(events)
        suffix = running.run_id[-3:]
        with pytest.raises(CorralError) as unknown:
            await first.attach(suffix)
        assert "unknown run" in unknown.value.title and running.run_id in str(unknown.value)
        assert not (Path(config.cluster.run_root) / suffix).exists(), "a ghost run was recorded"
        # The process match is on the whole id: the suffix matches none of the run's processes.
        from remote.run.stop import run_pattern
        found = subprocess.run(["pgrep", "-f", run_pattern(suffix)], capture_output=True)
        assert found.stdout == b""
        assert run_processes(running.run_id), "the live run was touched"
        # A unique start of the id is that run; the controller that did not start it stops it.
        stopper = (first, second)[1 - handles.index(running)]
        prefix = await stopper.attach(running.run_id[:-2])
        assert prefix.run_id == running.run_id
        assert len(run_processes(running.run_id)) >= 4  # 2 launchers + 2 ranks at least
        report = await prefix.stop(grace_s=10)
        assert report.clean, report
        assert report.remaining == {"h0": 0, "h1": 0}
        assert run_processes(running.run_id) == []
        final = [e async for e in bounded(events)][-1]
        assert isinstance(final, RunStatus) and final.state == "stopped"
    finally:
        await first.aclose()
        await second.aclose()


async def test_status_finds_what_a_cut_off_host_left_running_and_keeps_the_outcome(
    sshd_cluster
) -> None:
    from remote.hosts.pool import HostPool
    from remote.run.refresh import refresh_runs_report

    cluster = sshd_cluster(1)
    # Lost for good after 2 s without a connection (the run then fails without the host).
    config = cluster.config(hosts=slow_hosts(cluster), run=tiny_run(steps=100000),
                            ssh=cluster.ssh_section(lost_after=2.0))
    daemon = cluster.hosts[0]
    controller = SshRunController(config)
    restarted: subprocess.Popen[bytes] | None = None
    try:
        handle = await controller.start()
        events = handle.events()
        await until_first_step(events)
        # Cut the host off: its SSH server and every session of it end; training goes on.
        cut_ssh(daemon)
        final = [e async for e in bounded(events)][-1]
        assert isinstance(final, RunStatus) and final.state == "failed", final
        assert run_processes(handle.run_id), "the cut-off host should still be training"
        assert read_run_info(config, handle.run_id).suspect_hosts == ("h0",)

        # The host comes back: status looks again and reports the leftovers apart.
        restarted = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cluster.root / f"sshd_config.{daemon.port}")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pool = HostPool(config)
        try:
            deadline = time.monotonic() + 30
            while True:  # the new daemon listens once a connection works
                runs, unverified = await refresh_runs_report(config, pool)
                if not unverified:
                    break
                assert time.monotonic() < deadline, "the restarted sshd never answered"
                await pool.drop("h0")
                await asyncio.sleep(0.2)  # polling a condition with a deadline
            info = next(r for r in runs if r.run_id == handle.run_id)
            assert info.state == "failed", info
            assert "processes left" in info.cleanup and "on h0" in info.cleanup, info.cleanup
            report = await (await controller.attach(handle.run_id)).stop(grace_s=5)
            assert report.clean, report
            assert run_processes(handle.run_id) == []
            runs, _ = await refresh_runs_report(config, pool)
            info = next(r for r in runs if r.run_id == handle.run_id)
            assert info.state == "failed" and info.suspect_hosts == ()
        finally:
            await pool.aclose()
    finally:
        await controller.aclose()
        if restarted is not None:
            restarted.kill()
            restarted.wait()


async def test_a_stopped_rank_is_named_and_the_run_stopped_after_the_hang_limit(
    sshd_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import remote.run.hang

    # Tiny steps: seconds are plenty. A silence before the stop only says so; the run stops after
    # hang_limit (8 s) with no step, which another test's load beside it never comes near.
    monkeypatch.setattr(remote.run.hang, "MIN_SILENCE_S", 1.0)
    cluster = sshd_cluster(2)
    config = cluster.config(run=replace(tiny_run(steps=100000), hang_factor=3.0,
                                        hang_limit=8.0))
    controller = SshRunController(config)
    events: list[RunEvent] = []
    paused: int | None = None
    try:
        handle = await controller.start()
        pids: dict[int, int] = {}
        async for event in bounded(handle.events()):
            events.append(event)
            if isinstance(event, RankEvent) and isinstance(event.event, StartEvent):
                pids[event.event.rank] = event.event.pid
            if (paused is None and 1 in pids and isinstance(event, RankEvent)
                    and isinstance(event.event, StepEvent) and event.event.step >= 3):
                paused = pids[1]
                os.kill(paused, signal.SIGSTOP)
    finally:
        if paused is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(paused, signal.SIGCONT)
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert (final.failed_host, final.failed_rank) == ("h1", 1), final
    assert "hung: no step for" in final.detail and "stopped (SIGSTOP)" in final.detail
    said = [e.text for e in events if isinstance(e, LogLine) and e.host == "*"]
    assert any(t.startswith("no step for") for t in said), said
    assert any("rank 1 on h1 is stopped (SIGSTOP)" in t for t in said), said
    assert run_processes(handle.run_id) == []


async def test_a_lost_ssh_connection_is_reconnected_and_the_run_goes_on(sshd_cluster) -> None:
    # One host: the follower keeps one tail per host, the same for every host, and the ranks
    # never talk over SSH, so a second host would only watch h0's tail be cut and re-opened.
    cluster = sshd_cluster(1)
    config = cluster.config(hosts=slow_hosts(cluster), run=tiny_run(steps=100000),
                            ssh=cluster.ssh_section(lost_after=60))
    daemon = cluster.hosts[0]
    controller = SshRunController(config)
    restarted: subprocess.Popen[bytes] | None = None
    events: list[RunEvent] = []
    try:
        handle = await controller.start()
        stream = bounded(handle.events())
        async for event in stream:
            events.append(event)
            if isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                break
        cut_ssh(daemon)
        async for event in stream:  # the follower notices and says it is reconnecting
            events.append(event)
            if isinstance(event, HostStatus) and event.host == "h0" and "reconnecting" in \
                    event.detail:
                break
        restarted = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cluster.root / f"sshd_config.{daemon.port}")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        back_at = len(events)
        async for event in stream:
            events.append(event)
            if (isinstance(event, RankEvent) and event.host == "h0"
                    and isinstance(event.event, StepEvent)
                    and any(isinstance(e, HostStatus) and e.state == "running"
                            and "reconnected" in e.detail for e in events[back_at:])):
                break  # h0's steps flow again after the reconnection
        assert not any(isinstance(e, RunStatus) and e.state == "failed" for e in events)
        # A stop on the handle ends the stream as stopped, with nothing of the run left.
        report = await handle.stop(grace_s=5)
        assert report.clean, report
        final = [e async for e in stream][-1]
        assert isinstance(final, RunStatus) and final.state == "stopped", final
        assert run_processes(handle.run_id) == []
    finally:
        await controller.aclose()
        if restarted is not None:
            restarted.kill()
            restarted.wait()
    # No step event was lost or shown twice across the reconnection.
    steps = [e.event.step for e in events if isinstance(e, RankEvent)
             and isinstance(e.event, StepEvent) and e.event.rank == 0]
    assert steps == list(range(steps[0], steps[0] + len(steps))), steps
