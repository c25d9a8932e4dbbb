"""Test doubles of the run API: scripted ``RunEvent``s behind its protocols, no hosts.

``FakeController`` implements ``remote.api.RunController`` and ``FakeRun`` implements
``RunHandle``, so the console cannot tell them from the SSH controller. ``scripted_run`` writes a
whole run as events with fixed times (the console's snapshots depend on them); a ``HOLD`` in a
script keeps the run live until the test releases it. The console's load benchmark
(bench/console_load.py) builds its synthetic source on ``FakeRun`` and ``FakeController``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from remote.api import (
    CheckItem,
    CheckReport,
    HostStatus,
    LogLine,
    RankEvent,
    RunEvent,
    RunStatus,
    StopReport,
)
from trainer.events import (
    CapacityEvent,
    CheckpointEvent,
    EndEvent,
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
)

HOLD = "hold"
"""Script marker: the stream waits here until ``FakeRun.release()`` (the run stays live)."""

ScriptItem = RunEvent | str


@dataclass(frozen=True, kw_only=True)
class FakeHost:
    """One made-up host of a scripted run."""

    name: str
    slowdown: float = 1.0
    """Relative compute time of its ranks (2.0 = twice as slow)."""
    nproc: int = 1
    device: str = "cpu"
    device_name: str = "Fake CPU"


DEMO_HOSTS = (
    FakeHost(name="alpha", slowdown=1.0),
    FakeHost(name="beta", slowdown=2.0),
    FakeHost(name="gamma", slowdown=4.0),
)


@dataclass(frozen=True)
class _Script:
    """What every phase of a scripted run needs to know."""

    run_id: str
    hosts: Sequence[FakeHost]
    ranks: list[tuple[FakeHost, int]]
    """``(host, local rank)`` per global rank."""
    global_batch: int
    policy: str

    @property
    def slowdowns(self) -> list[float]:
        return [host.slowdown for host, _ in self.ranks]

    @property
    def rank0_host(self) -> str:
        return self.ranks[0][0].name


def scripted_run(
    run_id: str, *, hosts: Sequence[FakeHost] = DEMO_HOSTS, steps: int = 20,
    global_batch: int = 60, rebalance_at: int | None = 6, fail: tuple[int, int] | None = None,
    hold_at: int | None = None, policy: str = "dynamic", t0: float = 1_000_000.0,
    start_step: int = 0,
) -> list[ScriptItem]:
    """A whole run as a list of events with fixed times: check, push, launch, steps, end.

    Rank r computes its local batch at ``0.01 s × slowdown`` per sample. ``rebalance_at``: the
    step from which a proportional split applies. ``fail=(rank, step)``: that rank fails at that
    step and the run fails. ``hold_at``: a ``HOLD`` before that step (the run stays live).
    """
    script = _Script(run_id=run_id, hosts=hosts, global_batch=global_batch, policy=policy,
                     ranks=[(h, i) for h in hosts for i in range(h.nproc)])
    split = _equal_split(global_batch, len(script.ranks))
    out, t = _launch_events(script, t0)
    out += _start_events(script, t, split, start_step=start_step, steps=steps)
    for step in range(start_step + 1, steps + 1):
        if hold_at is not None and step == hold_at:
            out.append(HOLD)
        if rebalance_at is not None and step == rebalance_at:
            rebalance, split = _rebalance_event(script, t, step, split)
            out.append(rebalance)
        t, step_events, failed = _step_events(script, t, step, split, fail)
        out += step_events
        if failed:
            return out
    out += _end_events(script, t, steps)
    return out


def _launch_events(script: _Script, t: float) -> tuple[list[ScriptItem], float]:
    """Check, push and launch, each host through each state; returns the events and the time."""
    run_id = script.run_id
    out: list[ScriptItem] = [RunStatus(t=t, run_id=run_id, state="checking")]
    for state in ("connecting", "checking", "pushing", "starting"):
        if state == "pushing":
            out.append(RunStatus(t=t, run_id=run_id, state="pushing"))
        if state == "starting":
            out.append(RunStatus(t=t, run_id=run_id, state="launching"))
        for h in script.hosts:
            t += 0.1
            out.append(HostStatus(t=t, host=h.name, state=state))
    for h in script.hosts:
        out.append(HostStatus(t=t, host=h.name, state="running"))
    out.append(RunStatus(t=t, run_id=run_id, state="running"))
    return out, t


def _start_events(script: _Script, t: float, split: tuple[int, ...], *, start_step: int,
                  steps: int) -> list[ScriptItem]:
    """Every rank's start event and first log line, then the profiled capacities."""
    world = len(script.ranks)
    out: list[ScriptItem] = []
    for rank, (h, local) in enumerate(script.ranks):
        out.append(RankEvent(host=h.name, event=StartEvent(
            t=t, rank=rank, world_size=world, local_rank=local, host=h.name, pid=1000 + rank,
            device=h.device, device_name=h.device_name, backend="gloo", model="simple_cnn",
            dataset="synthetic_image", global_batch=script.global_batch, split=split,
            policy=script.policy, step=start_step, total_steps=steps, steps_per_epoch=10,
            threads=1, slowdown=h.slowdown)))
        out.append(LogLine(t=t, host=h.name, rank=rank, text=f"rank {rank} ready"))
    out.append(RankEvent(host=script.rank0_host, event=CapacityEvent(
        t=t, rank=0, source="profile", samples_per_s=tuple(100.0 / s for s in script.slowdowns),
        max_batch=tuple(None for _ in script.ranks),
        solo_samples_per_s=tuple(100.0 / s for s in script.slowdowns),
        solo_source=tuple("profile" for _ in script.ranks),
        solo_batch=tuple(script.global_batch for _ in script.ranks))))
    return out


def _rebalance_event(script: _Script, t: float, step: int,
                     split: tuple[int, ...]) -> tuple[RankEvent, tuple[int, ...]]:
    """A move to the split proportional to speed, from ``step``; returns it and the new split."""
    slow = script.slowdowns
    new = _proportional_split(script.global_batch, [1.0 / s for s in slow])
    times = tuple(0.01 * s * b for s, b in zip(slow, split, strict=True))
    gain = 1.0 - max(0.01 * s * b for s, b in zip(slow, new, strict=True)) / max(times)
    event = RankEvent(host=script.rank0_host, event=RebalanceEvent(
        t=t, rank=0, step=step, previous=split, split=new, reason="compute times differ",
        predicted_gain=round(gain, 4), times=times, policy=script.policy))
    return event, new


def _step_events(script: _Script, t: float, step: int, split: tuple[int, ...],
                 fail: tuple[int, int] | None) -> tuple[float, list[ScriptItem], bool]:
    """One step of every rank (resources every 5th, a checkpoint every 10th step), or the
    failure ``fail`` names; returns the step's end time, its events and whether the run failed."""
    compute = [0.01 * s * b for s, b in zip(script.slowdowns, split, strict=True)]
    step_s = max(compute) + 0.02
    t += step_s
    loss = 2.0 / (1 + 0.1 * step)
    out: list[ScriptItem] = []
    for rank, (h, _) in enumerate(script.ranks):
        if fail is not None and (rank, step) == fail:
            out += _failure_events(script, t, rank, h.name, step)
            return t, out, True
        out.append(RankEvent(host=h.name, event=StepEvent(
            t=t, rank=rank, step=step, epoch=(step - 1) // 10, local_batch=split[rank],
            loss=loss, compute_s=compute[rank], step_s=step_s,
            global_loss=loss if rank == 0 else None)))
        if step % 5 == 0:
            out.append(RankEvent(host=h.name, event=ResourceEvent(
                t=t, rank=rank, cpu_percent=95.0, rss_bytes=512 * 2**20)))
    if step % 10 == 0:
        out.append(RankEvent(host=script.rank0_host, event=CheckpointEvent(
            t=t, rank=0, step=step, path=f"runs/{script.run_id}/ckpt/step-{step}.pt")))
    return t, out, False


def _failure_events(script: _Script, t: float, rank: int, host: str,
                    step: int) -> list[ScriptItem]:
    """``rank`` on ``host`` fails at ``step``, and with it the run."""
    return [
        LogLine(t=t, host=host, rank=rank, text="RuntimeError: boom"),
        RankEvent(host=host, event=EndEvent(
            t=t, rank=rank, step=step - 1, status="failed", error="RuntimeError: boom")),
        HostStatus(t=t, host=host, state="failed", detail=f"rank {rank} exited with code 1"),
        RunStatus(t=t, run_id=script.run_id, state="failed", failed_host=host,
                  failed_rank=rank, detail=f"rank {rank} on {host}: boom"),
    ]


def _end_events(script: _Script, t: float, steps: int) -> list[ScriptItem]:
    """Rank 0 names the final model (a line longer than a narrow logs panel), every rank ends,
    every host is done, the run completed."""
    final = f"/root/.corral/runs/{script.run_id}/final"
    out: list[ScriptItem] = [LogLine(t=t, host=script.rank0_host, rank=0,
                                     text=f"corral trainer: the trained result is in {final}")]
    out += [
        RankEvent(host=h.name, event=EndEvent(t=t, rank=rank, step=steps, status="completed"))
        for rank, (h, _) in enumerate(script.ranks)]
    out += [HostStatus(t=t, host=h.name, state="done") for h in script.hosts]
    out.append(RunStatus(t=t, run_id=script.run_id, state="completed"))
    return out


def events_only(script: Sequence[ScriptItem]) -> list[RunEvent]:
    """A script's events without its ``HOLD`` markers (to feed a model directly)."""
    return [item for item in script if not isinstance(item, str)]


def _equal_split(total: int, parts: int) -> tuple[int, ...]:
    return tuple(total // parts + (1 if i < total % parts else 0) for i in range(parts))


def _proportional_split(total: int, weights: Sequence[float]) -> tuple[int, ...]:
    raw = [total * w / sum(weights) for w in weights]
    shares = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return tuple(shares)


class FakeRun:
    """A ``RunHandle`` that replays a script; ``stop`` ends it like a real stop would."""

    def __init__(self, run_id: str, script: Sequence[ScriptItem], *,
                 hosts: Sequence[str] = (), pace_s: float = 0.0, name: str = "") -> None:
        self.run_id = run_id
        self.name = name
        self._script = list(script)
        self.hosts = list(hosts)
        self._pace_s = pace_s
        self._released = asyncio.Event()
        self._stopped = asyncio.Event()
        self.stop_calls = 0
        self.finished = False
        """True once the stream delivered its final event."""
        self.stop_report = StopReport(run_id=run_id, remaining={h: 0 for h in hosts})

    def release(self) -> None:
        """Let the stream go past its ``HOLD``."""
        self._released.set()

    async def events(self) -> AsyncIterator[RunEvent]:
        for item in self._script:
            if self._stopped.is_set():
                break
            if isinstance(item, str):
                await _first_of(self._released.wait(), self._stopped.wait())
                if self._stopped.is_set():
                    break
                continue
            if self._pace_s:
                await asyncio.sleep(self._pace_s)
            yield item
        if self._stopped.is_set():
            now = time.time()
            for host in self.hosts:
                yield HostStatus(t=now, host=host, state="stopped")
            yield RunStatus(t=now, run_id=self.run_id, state="stopped", detail="stopped by user")
        self.finished = True

    async def stop(self, *, grace_s: float = 10.0) -> StopReport:
        self.stop_calls += 1
        self._stopped.set()
        return self.stop_report


async def _first_of(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


@dataclass
class FakeController:
    """A ``RunController`` whose runs replay scripts; it records every call for tests."""

    hosts: Sequence[FakeHost] = DEMO_HOSTS
    script: Callable[..., list[ScriptItem]] = scripted_run
    """Builds a run's script: ``script(run_id, hosts=..., policy=..., start_step=...)``."""
    script_options: dict[str, Any] = field(default_factory=dict)
    pace_s: float = 0.0
    check_report: CheckReport | None = None
    start_error: Exception | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    runs: list[FakeRun] = field(default_factory=list)
    closed: bool = False
    run_name: str = ""
    """The name runs get when ``start`` is given none (a cluster.toml's ``[run] name``)."""

    async def check(self) -> CheckReport:
        self.calls.append(("check", {}))
        if self.check_report is not None:
            return self.check_report
        return CheckReport(items=tuple(
            CheckItem(host=h.name, name="reachable", ok=True, detail="local")
            for h in self.hosts))

    async def start(self, *, resume: bool | str = False, policy: str | None = None,
                    name: str | None = None,
                    script_args: Sequence[str] | None = None) -> FakeRun:
        call: dict[str, object] = {"resume": resume, "policy": policy}
        if script_args is not None:  # asked only by a script run's relaunch (the console's r)
            call["script_args"] = tuple(script_args)
        self.calls.append(("start", call))
        if self.start_error is not None:
            raise self.start_error
        resumed = resume and bool(self.runs)
        run_id = self.runs[-1].run_id if resumed else f"fake-{len(self.runs) + 1}"
        options = dict(self.script_options)
        options.setdefault("policy", policy or "dynamic")
        if resume:
            options.setdefault("start_step", 10)
        run = FakeRun(run_id, self.script(run_id, hosts=self.hosts, **options),
                      hosts=[h.name for h in self.hosts], pace_s=self.pace_s,
                      name=name or self.run_name)
        self.runs.append(run)
        return run

    async def attach(self, run_id: str) -> FakeRun:
        self.calls.append(("attach", {"run_id": run_id}))
        options = dict(self.script_options)
        run = FakeRun(run_id, self.script(run_id, hosts=self.hosts, **options),
                      hosts=[h.name for h in self.hosts], pace_s=self.pace_s)
        self.runs.append(run)
        return run

    async def aclose(self) -> None:
        self.calls.append(("aclose", {}))
        self.closed = True
