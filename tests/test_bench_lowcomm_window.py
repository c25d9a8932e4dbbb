"""bench/lowcomm_shaped.py's figures of one run (bench/lowcomm_window.py): throughput over the
steady window of wall time, each host's cores in it, and a local run's islands' compute,
exchange, wait and other, on hand-made events whose answers are known."""

from __future__ import annotations

import pytest

from bench._hosts_cpu import HostCpuReading
from bench.lowcomm_window import WARMUP_STEPS, host_cores, island_shares, steady_window


def _round(t: float, steps: tuple[int, int], inner_s: tuple[float, float],
           exchange_s: tuple[float, float], cpu_s: tuple[float, float]) -> dict[str, object]:
    return {"event": "round", "t": t, "inner_steps": list(steps), "inner_s": list(inner_s),
            "exchange_s": min(exchange_s), "island_exchange_s": list(exchange_s),
            "inner_cpu_s": list(cpu_s), "round_s": 10.0, "exchanged_bytes": 100,
            "round_steps": 20}


START = {"event": "start", "global_batch": 8}


def test_a_local_run_is_judged_after_its_first_round_over_wall_time() -> None:
    # Round 1 chooses H; rounds 2 and 3 each take 10 s of wall: island 0 computes 8 s, waits
    # 1 s for island 1 and sees 0.5 s of exchange; island 1 computes 9 s.
    events = [START, _round(5.0, (2, 2), (1.0, 1.0), (3.0, 3.0), (0.6, 0.6)),
              _round(15.0, (20, 18), (8.0, 9.0), (1.5, 0.5), (4.8, 5.4)),
              _round(25.0, (20, 18), (8.0, 9.0), (1.5, 0.5), (4.8, 5.4))]
    window = steady_window(events)
    assert (window.start, window.end, window.samples) == (5.0, 25.0, 76 * 8)
    assert window.rate == pytest.approx(76 * 8 / 20)
    first, second = island_shares(events, window)
    assert (first.compute, first.exchange, first.wait) == pytest.approx((0.8, 0.05, 0.1))
    assert first.other == pytest.approx(0.05)
    assert (second.compute, second.wait, second.other) == pytest.approx((0.9, 0.0, 0.05))
    assert first.speed == pytest.approx(40 * 8 / 16) and first.cores == pytest.approx(0.6)


def test_an_exact_run_is_judged_from_the_balancers_settling_to_its_last_step() -> None:
    steps = [{"event": "step", "step": s, "t": 100.0 + s * 0.5} for s in range(1, 41)]
    window = steady_window([START, *steps])
    assert (window.start, window.samples) == (100.0 + WARMUP_STEPS * 0.5,
                                              (40 - WARMUP_STEPS) * 8)
    assert window.rate == pytest.approx(16.0)


def test_each_hosts_cores_and_throttling_come_from_the_readings_inside_the_window() -> None:
    readings = [HostCpuReading(t=t, used_s=(0.6 * t, 0.3 * t), periods=(100 * int(t),) * 2,
                               throttled=(90 * int(t), 0)) for t in range(0, 12)]
    window = steady_window([START, *[{"event": "step", "step": s, "t": float(s - 10)}
                                     for s in range(12, 22)]])  # t 2 .. 11
    cores, throttled = host_cores(readings, window)
    assert cores == pytest.approx((0.6, 0.3)) and throttled == pytest.approx((0.9, 0.0))
    assert host_cores(readings[:1], window) == ((), ())
