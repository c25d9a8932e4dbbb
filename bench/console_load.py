"""Console under load: 256 synthetic ranks at 10 events/s each, headless, for 30 s.

Measures the console process's CPU time (target < 25 % of one core) and the time from a key
press to its action running (target < 100 ms, median and max) while the events pour in.
The synthetic source runs in the same process, so its own cost is measured separately (the
same stream drained with no console) and reported next to the total. A flood of rank output
(3 ranks × 3,000 lines a second beside 20) is ``bench/console_flood.py``'s.

    python bench/console_load.py            # 256 ranks, 10 events/s each, 30 s
    python bench/console_load.py --quick    # 5 s

With ``--tensorboard both`` (the default when the tensorboard package is installed) the run is
measured with and without TensorBoard files being written (every rank event's JSON line goes
through ``remote.records.tensorboard.BoardWriter``, as the live follower's copy hands it over),
interleaved ``--repeat`` times; medians are reported side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.app import ConsoleApp
from console.model.run import RunModel
from console.session import Session
from console.widgets.modals import HelpScreen
from remote.api import LogLine, RankEvent, RunEvent, RunStatus
from tests.fake_runs import FakeController, FakeRun
from trainer.events import (
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
    event_to_json,
)

CPU_TARGET = 0.25
LATENCY_TARGET_S = 0.100
KEY_EVERY_S = 0.5
"""How often a key is pressed during the run (alternating ``p`` and ``?`` / Esc)."""


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
        split = (64,) * n
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
                        compute_s=compute, step_s=0.1,
                        global_loss=1.0 / tick if r == 0 else None))
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


class TimedConsole(ConsoleApp):
    """The console, noting when each key's action ran."""

    action_ran: list[float]

    def action_cycle_policy(self) -> None:
        self.action_ran.append(time.perf_counter())
        super().action_cycle_policy()

    def action_help(self) -> None:
        self.action_ran.append(time.perf_counter())
        super().action_help()


class BoardLoadRun(LoadRun):
    """The synthetic load, each rank event also written to TensorBoard files from its JSON
    line, the way the follower's local copy feeds the writer during a real run."""

    def __init__(self, run_id: str, *, board_dir: Path, **load: Any) -> None:
        super().__init__(run_id, **load)
        from remote.records.tensorboard import BoardWriter

        self.board = BoardWriter(board_dir)

    async def events(self) -> AsyncIterator[RunEvent]:
        async for event in super().events():
            if isinstance(event, RankEvent):
                self.board.add_event(event.event, event.host)
            yield event
        self.board.close()


@dataclass
class BoardLoadController(LoadController):
    """``LoadController`` whose run writes TensorBoard files into ``board_dir``."""

    board_dir: Path = Path(".")

    async def start(self, *, resume: bool = False, policy: str | None = None,
                    name: str | None = None) -> FakeRun:
        run = BoardLoadRun(f"load-{len(self.runs) + 1}", board_dir=self.board_dir, **self.load)
        self.runs.append(run)
        return run


async def source_only_cpu(ranks: int, rate: float, duration: float, *,
                          lines: bool = False) -> float:
    """CPU seconds the synthetic stream costs on its own (drained, nothing rendered).

    ``lines``: also encode each rank event as its JSON line: in a real run the trainer writes
    those on the hosts, so the TensorBoard variant does not count them as the console's.
    """
    run = LoadRun("source-only", ranks=ranks, rate_hz=rate, duration_s=duration)
    cpu0 = time.process_time()
    async for event in run.events():
        if lines and isinstance(event, RankEvent):
            event_to_json(event.event)
    return time.process_time() - cpu0


async def console_under_load(ranks: int, rate: float, duration: float,
                             size: tuple[int, int], board_dir: Path | None = None,
                             ) -> dict[str, float]:
    load = {"ranks": ranks, "rate_hz": rate, "duration_s": duration}
    controller = (LoadController(load=load) if board_dir is None
                  else BoardLoadController(load=load, board_dir=board_dir))
    probe = LoadRun("probe", ranks=ranks)
    model = RunModel(cluster_name="load", hosts=probe.hosts, policy="dynamic")
    app = TimedConsole(Session(controller=controller, model=model))
    app.action_ran = []
    latencies: list[float] = []
    async with app.run_test(size=size) as pilot:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await pilot.press("s")
        while not (controller.runs and controller.runs[0].finished):
            await asyncio.sleep(KEY_EVERY_S)
            key = "p" if len(latencies) % 2 == 0 else "question_mark"
            before = len(app.action_ran)
            pressed = time.perf_counter()
            await pilot.press(key)
            while len(app.action_ran) == before:
                await asyncio.sleep(0.001)
            latencies.append(app.action_ran[-1] - pressed)
            if isinstance(app.screen, HelpScreen):
                await pilot.press("escape")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        run = controller.runs[0]
        assert isinstance(run, LoadRun)
        events = run.sent
    return {
        "cpu_s": cpu, "wall_s": wall, "events": events, "latency_median_s":
        statistics.median(latencies), "latency_max_s": max(latencies), "keys": len(latencies),
        "applied_version": model.version,
    }


def measure(args: argparse.Namespace, duration: float, size: tuple[int, int],
            board: bool) -> dict[str, float]:
    """One console run under load (TensorBoard files written when ``board``), its source's
    own CPU measured apart: the figures of one table."""
    with tempfile.TemporaryDirectory(prefix="corral-board-") as tmp:
        result = asyncio.run(console_under_load(args.ranks, args.rate, duration, size,
                                                Path(tmp) if board else None))
        written = sum(f.stat().st_size for f in Path(tmp).iterdir()) if board else 0
    source = asyncio.run(source_only_cpu(args.ranks, args.rate, duration, lines=board))
    wall = result["wall_s"]
    return {**result, "total": result["cpu_s"] / wall,
            "console_only": max(0.0, result["cpu_s"] - source) / wall, "board_bytes": written}


def table(label: str, runs: list[dict[str, float]], args: argparse.Namespace) -> bool:
    """Print the medians of ``runs``; True when they meet the targets."""
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    total, console_only = med("total"), med("console_only")
    median, worst = med("latency_median_s"), max(r["latency_max_s"] for r in runs)
    spread = [f"{r['console_only']:.1%}" for r in runs]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "**over**"

    print(f"#### {label} (median of {len(runs)}; console alone per run: {', '.join(spread)})\n")
    print("| metric | value | target | |")
    print("|---|---|---|---|")
    print(f"| events delivered | {med('events'):.0f} ({med('events') / med('wall_s'):.0f}/s) "
          f"| {args.ranks * args.rate:.0f}/s | |")
    if med("board_bytes"):
        print(f"| TensorBoard files written | {med('board_bytes') / 1e6:.1f} MB | | |")
    print(f"| CPU, whole process (console + synthetic source) | {total:.1%} of a core "
          f"| < {CPU_TARGET:.0%} | {verdict(total < CPU_TARGET)} |")
    print(f"| CPU, console alone (source measured apart) | {console_only:.1%} of a core "
          f"| < {CPU_TARGET:.0%} | {verdict(console_only < CPU_TARGET)} |")
    print(f"| key → action, median | {median * 1000:.1f} ms "
          f"| < {LATENCY_TARGET_S * 1000:.0f} ms | {verdict(median < LATENCY_TARGET_S)} |")
    print(f"| key → action, max | {worst * 1000:.1f} ms | < {LATENCY_TARGET_S * 1000:.0f} ms "
          f"| {verdict(worst < LATENCY_TARGET_S)} |\n")
    return console_only < CPU_TARGET and worst < LATENCY_TARGET_S


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=256)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per rank")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--quick", action="store_true", help="5 s instead of --duration")
    parser.add_argument("--size", default="160x50", help="terminal size, COLSxROWS")
    parser.add_argument("--tensorboard", choices=("off", "on", "both"), default=None,
                        help="write TensorBoard files during the run (default: both, "
                             "interleaved, when tensorboard is installed; else off)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    cols, rows = (int(v) for v in args.size.split("x"))
    from remote.records.tensorboard import available

    mode = args.tensorboard or ("both" if available() else "off")
    variants = {"off": [False], "on": [True], "both": [False, True]}[mode]
    results: dict[bool, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.repeat):  # interleaved: A B A B ... so drift hits both alike
        for board in variants:
            results[board].append(measure(args, duration, (cols, rows), board))
    print(f"### Console load: {args.ranks} ranks × {args.rate:g} events/s for {duration:g} s "
          f"({cols}×{rows}, headless)\n")
    ok = True
    for board, runs in results.items():
        ok &= table("TensorBoard files written" if board else "no TensorBoard", runs, args)
    if len(results) == 2:
        off, on = (statistics.median(r["console_only"] for r in results[b])
                   for b in (False, True))
        print(f"TensorBoard on / off, console CPU: {on / off:.2f}× ({on:.1%} vs {off:.1%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
