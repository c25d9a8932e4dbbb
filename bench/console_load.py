"""Console under load: 256 synthetic ranks at 10 events/s each, headless, for 30 s.

Measures the console process's CPU time (target < 25 % of one core) and the time from a key
press to its action running (target < 100 ms, median and max) while the events pour in.
The synthetic source runs in the same process, so its own cost is measured separately (the
same stream drained with no console) and reported next to the total.

    python bench/console_load.py            # 256 ranks, 10 events/s each, 30 s
    python bench/console_load.py --quick    # 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.app import ConsoleApp
from console.fake import LoadController, LoadRun
from console.state import RunModel
from console.widgets.modals import HelpScreen

CPU_TARGET = 0.25
LATENCY_TARGET_S = 0.100
KEY_EVERY_S = 0.5
"""How often a key is pressed during the run (alternating ``p`` and ``?`` / Esc)."""


class TimedConsole(ConsoleApp):
    """The console, noting when each key's action ran."""

    action_ran: list[float]

    def action_cycle_policy(self) -> None:
        self.action_ran.append(time.perf_counter())
        super().action_cycle_policy()

    def action_help(self) -> None:
        self.action_ran.append(time.perf_counter())
        super().action_help()


async def source_only_cpu(ranks: int, rate: float, duration: float) -> float:
    """CPU seconds the synthetic stream costs on its own (drained, nothing rendered)."""
    run = LoadRun("source-only", ranks=ranks, rate_hz=rate, duration_s=duration)
    cpu0 = time.process_time()
    async for _ in run.events():
        pass
    return time.process_time() - cpu0


async def console_under_load(ranks: int, rate: float, duration: float,
                             size: tuple[int, int]) -> dict[str, float]:
    controller = LoadController(load={"ranks": ranks, "rate_hz": rate, "duration_s": duration})
    probe = LoadRun("probe", ranks=ranks)
    model = RunModel(cluster_name="load", hosts=probe.hosts, policy="dynamic")
    app = TimedConsole(controller=controller, model=model)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=256)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per rank")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--quick", action="store_true", help="5 s instead of --duration")
    parser.add_argument("--size", default="160x50", help="terminal size, COLSxROWS")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    cols, rows = (int(v) for v in args.size.split("x"))

    result = asyncio.run(console_under_load(args.ranks, args.rate, duration, (cols, rows)))
    source = asyncio.run(source_only_cpu(args.ranks, args.rate, duration))
    wall = result["wall_s"]
    total = result["cpu_s"] / wall
    console_only = max(0.0, result["cpu_s"] - source) / wall
    median, worst = result["latency_median_s"], result["latency_max_s"]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "**over**"

    print(f"### Console load: {args.ranks} ranks × {args.rate:g} events/s for {duration:g} s "
          f"({cols}×{rows}, headless)\n")
    print("| metric | value | target | |")
    print("|---|---|---|---|")
    print(f"| events delivered | {result['events']:.0f} ({result['events'] / wall:.0f}/s) "
          f"| {args.ranks * args.rate:.0f}/s | |")
    print(f"| CPU, whole process (console + synthetic source) | {total:.1%} of a core "
          f"| < {CPU_TARGET:.0%} | {verdict(total < CPU_TARGET)} |")
    print(f"| CPU, console alone (source measured apart) | {console_only:.1%} of a core "
          f"| < {CPU_TARGET:.0%} | {verdict(console_only < CPU_TARGET)} |")
    print(f"| key → action, median ({result['keys']:.0f} presses) | {median * 1000:.1f} ms "
          f"| < {LATENCY_TARGET_S * 1000:.0f} ms | {verdict(median < LATENCY_TARGET_S)} |")
    print(f"| key → action, max | {worst * 1000:.1f} ms | < {LATENCY_TARGET_S * 1000:.0f} ms "
          f"| {verdict(worst < LATENCY_TARGET_S)} |")
    ok = console_only < CPU_TARGET and worst < LATENCY_TARGET_S
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
