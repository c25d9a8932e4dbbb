"""A run source without hosts: scripted ``RunEvent``s behind the real run API's protocols.

``FakeController`` implements ``remote.api.RunController`` and ``FakeRun`` implements
``RunHandle``, so the console cannot tell them from the SSH controller. They serve the console's
tests (a ``HOLD`` in a script keeps the run live until the test releases it), the load benchmark
(``LoadRun``: hundreds of synthetic ranks at a fixed event rate) and a demo mode
(``demo_controller``: a paced, made-up run on three hosts).
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
    ranks = [(h, i) for h in hosts for i in range(h.nproc)]
    world = len(ranks)
    split = _equal_split(global_batch, world)
    slow = [h.slowdown for h, _ in ranks]
    out: list[ScriptItem] = [RunStatus(t=t0, run_id=run_id, state="checking")]
    t = t0
    for state in ("connecting", "checking", "pushing", "starting"):
        if state == "pushing":
            out.append(RunStatus(t=t, run_id=run_id, state="pushing"))
        if state == "starting":
            out.append(RunStatus(t=t, run_id=run_id, state="launching"))
        for h in hosts:
            t += 0.1
            out.append(HostStatus(t=t, host=h.name, state=state))
    for h in hosts:
        out.append(HostStatus(t=t, host=h.name, state="running"))
    out.append(RunStatus(t=t, run_id=run_id, state="running"))
    for rank, (h, local) in enumerate(ranks):
        out.append(RankEvent(host=h.name, event=StartEvent(
            t=t, rank=rank, world_size=world, local_rank=local, host=h.name, pid=1000 + rank,
            device=h.device, device_name=h.device_name, backend="gloo", model="simple_cnn",
            dataset="synthetic_image", global_batch=global_batch, split=split, policy=policy,
            step=start_step, total_steps=steps, steps_per_epoch=10, threads=1,
            slowdown=h.slowdown)))
        out.append(LogLine(t=t, host=h.name, rank=rank, text=f"rank {rank} ready"))
    out.append(RankEvent(host=ranks[0][0].name, event=CapacityEvent(
        t=t, rank=0, source="profile", samples_per_s=tuple(100.0 / s for s in slow),
        max_batch=tuple(None for _ in ranks))))
    for step in range(start_step + 1, steps + 1):
        if hold_at is not None and step == hold_at:
            out.append(HOLD)
        if rebalance_at is not None and step == rebalance_at:
            new = _proportional_split(global_batch, [1.0 / s for s in slow])
            times = tuple(0.01 * s * b for s, b in zip(slow, split, strict=True))
            gain = 1.0 - max(0.01 * s * b for s, b in zip(slow, new, strict=True)) / max(times)
            out.append(RankEvent(host=ranks[0][0].name, event=RebalanceEvent(
                t=t, rank=0, step=step, previous=split, split=new, reason="compute times differ",
                predicted_gain=round(gain, 4), times=times, policy=policy)))
            split = new
        compute = [0.01 * s * b for s, b in zip(slow, split, strict=True)]
        step_s = max(compute) + 0.02
        t += step_s
        loss = 2.0 / (1 + 0.1 * step)
        for rank, (h, _) in enumerate(ranks):
            if fail is not None and (rank, step) == fail:
                out.append(LogLine(t=t, host=h.name, rank=rank, text="RuntimeError: boom"))
                out.append(RankEvent(host=h.name, event=EndEvent(
                    t=t, rank=rank, step=step - 1, status="failed", error="RuntimeError: boom")))
                out.append(HostStatus(t=t, host=h.name, state="failed",
                                      detail=f"rank {rank} exited with code 1"))
                out.append(RunStatus(t=t, run_id=run_id, state="failed", failed_host=h.name,
                                     failed_rank=rank, detail=f"rank {rank} on {h.name}: boom"))
                return out
            out.append(RankEvent(host=h.name, event=StepEvent(
                t=t, rank=rank, step=step, epoch=(step - 1) // 10, local_batch=split[rank],
                loss=loss, compute_s=compute[rank], step_s=step_s,
                samples_per_s=split[rank] / step_s,
                global_loss=loss if rank == 0 else None,
                cluster_samples_per_s=global_batch / step_s if rank == 0 else None)))
            if step % 5 == 0:
                out.append(RankEvent(host=h.name, event=ResourceEvent(
                    t=t, rank=rank, cpu_percent=95.0, rss_bytes=512 * 2**20)))
        if step % 10 == 0:
            out.append(RankEvent(host=ranks[0][0].name, event=CheckpointEvent(
                t=t, rank=0, step=step, path=f"runs/{run_id}/ckpt/step-{step}.pt")))
    for rank, (h, _) in enumerate(ranks):
        out.append(RankEvent(host=h.name, event=EndEvent(t=t, rank=rank, step=steps,
                                                         status="completed")))
    for h in hosts:
        out.append(HostStatus(t=t, host=h.name, state="done"))
    out.append(RunStatus(t=t, run_id=run_id, state="completed"))
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
                    name: str | None = None) -> FakeRun:
        self.calls.append(("start", {"resume": resume, "policy": policy}))
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


def demo_controller(hosts: Sequence[str] = ("alpha", "beta", "gamma")) -> FakeController:
    """A paced, made-up run for trying the console without machines: one CPU rank per host
    name, each twice as slow as the one before."""
    fake = tuple(FakeHost(name=name, slowdown=2.0**i) for i, name in enumerate(hosts))
    return FakeController(hosts=fake, pace_s=0.02,
                          script_options={"steps": 400, "rebalance_at": 11})


class LoadRun(FakeRun):
    """Synthetic load: ``ranks`` ranks each sending ``rate_hz`` events a second, paced in real
    time for ``duration_s`` (steps, with a resources sample every 10th tick, a log line per
    tick and a rebalance every 50 ticks)."""

    def __init__(self, run_id: str, *, ranks: int = 256, per_host: int = 8,
                 rate_hz: float = 10.0, duration_s: float = 30.0) -> None:
        hosts = [f"node-{i:02d}" for i in range((ranks + per_host - 1) // per_host)]
        super().__init__(run_id, (), hosts=hosts)
        self.ranks, self.per_host = ranks, per_host
        self.rate_hz, self.duration_s = rate_hz, duration_s
        self.sent = 0
        """Events yielded so far."""

    def host_of(self, rank: int) -> str:
        return f"node-{rank // self.per_host:02d}"

    async def events(self) -> AsyncIterator[RunEvent]:
        n, t = self.ranks, time.time()
        split = _equal_split(64 * n, n)
        yield RunStatus(t=t, run_id=self.run_id, state="running")
        for r in range(n):
            yield RankEvent(host=self.host_of(r), event=StartEvent(
                t=t, rank=r, world_size=n, local_rank=r % self.per_host, host=self.host_of(r),
                pid=r, device="cuda:0", device_name="Fake GPU", backend="nccl", model="m",
                dataset="d", global_batch=64 * n, split=split, policy="dynamic", step=0,
                total_steps=1_000_000, steps_per_epoch=1000, threads=1, slowdown=1.0))
        period = 1.0 / self.rate_hz
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < self.duration_s and not self._stopped.is_set():
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
            t = time.time()
            for r in range(n):
                host = self.host_of(r)
                if tick % 10 == 0:
                    yield RankEvent(host=host, event=ResourceEvent(
                        t=t, rank=r, gpu_util=90.0, gpu_mem_used=2**33, gpu_mem_total=2**34))
                else:
                    compute = 0.05 * (1 + (r % 7) / 10)
                    yield RankEvent(host=host, event=StepEvent(
                        t=t, rank=r, step=tick, epoch=0, local_batch=split[r], loss=1.0 / tick,
                        compute_s=compute, step_s=0.1, samples_per_s=split[r] / 0.1,
                        global_loss=1.0 / tick if r == 0 else None,
                        cluster_samples_per_s=64 * n / 0.1 if r == 0 else None))
            yield LogLine(t=t, host=self.host_of(tick % n), rank=tick % n, text=f"tick {tick}")
            if tick % 50 == 0:
                yield RankEvent(host=self.host_of(0), event=RebalanceEvent(
                    t=t, rank=0, step=tick + 1, previous=split, split=split, reason="load test",
                    predicted_gain=0.01, times=tuple(0.05 for _ in range(n)), policy="dynamic"))
            self.sent += n + 1
        final = "stopped" if self._stopped.is_set() else "completed"
        yield RunStatus(t=time.time(), run_id=self.run_id, state=final)  # type: ignore[arg-type]
        self.finished = True


@dataclass
class LoadController(FakeController):
    """A controller whose ``start`` returns a ``LoadRun`` (for the console's load benchmark)."""

    load: dict[str, Any] = field(default_factory=dict)

    async def start(self, *, resume: bool | str = False, policy: str | None = None,
                    name: str | None = None) -> FakeRun:
        self.calls.append(("start", {"resume": resume, "policy": policy}))
        run = LoadRun(f"load-{len(self.runs) + 1}", **self.load)
        self.runs.append(run)
        return run
