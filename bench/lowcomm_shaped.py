"""``bench/lowcomm.py --shaped``: ``exchange = "local"`` against exact over shaped links.

Three network-namespace hosts with their own sshd (tests/remote/netns.py), one rank and one
thread each: n1 and n2 on 1 Gbit/s, n3 behind 50 Mbit/s Wi-Fi (its rate and 1 % loss; 5 ± 2 ms
of delay too where the kernel has netem). The same simple_cnn run (same seed, data and batch)
five ways, every way once per round, rounds interleaved (order reversed every other round):
each host alone (its solo throughput), the three hosts exact (the balancer benches n3), and the
three hosts local (each host an island; the round length chosen by the run). Reported: medians
over rounds of samples/s after the warm-up (exact: the global batch over the median step time
past the balancer's first decision; local: the samples of the rounds after the first over
their seconds), local against the sum of the solo throughputs (goal >= 0.8x) and against exact.

The hosts share this machine's cores: three ranks on fewer than three cores cannot reach the
sum of what each does alone, and the output says how many cores there were. ``--host-cpu
CORES`` gives every host a CPU share of its own instead (bench/many_hosts.py's cgroup quota:
0.6 each puts three hosts within two cores), as machines of their own would have.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 4096\nglobal_batch = 48\n'
       'steps = {steps}\ncheckpoint_every = 100000\npolicy = "dynamic"\nseed = 5\n{extra}')
WARMUP_STEPS = 12
"""Exact: steps before the balancer's first decision (at step 10) and its settling."""


def _events(run_dir: Path) -> list[dict[str, Any]]:
    path = next(run_dir.rglob("metrics/rank-0.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def samples_per_s(run_dir: Path) -> tuple[float, str]:
    """The run's steady throughput and a note (who sat out, or the round length)."""
    events = _events(run_dir)
    batch = next(e for e in events if e["event"] == "start")["global_batch"]
    rounds = [e for e in events if e["event"] == "round"]
    if rounds:  # local: the rounds after the first (which chooses the round length)
        later = rounds[1:] or rounds
        samples = sum(sum(r["inner_steps"]) for r in later) * batch
        seconds = sum(r["round_s"] for r in later)
        return samples / seconds, f"H={later[-1]['round_steps']}, {len(rounds)} rounds"
    steps = [e for e in events if e["event"] == "step" and e["step"] > WARMUP_STEPS]
    last = [e for e in events if e["event"] == "rebalance"]
    split = last[-1]["split"] if last else None
    return batch / statistics.median(e["step_s"] for e in steps), f"split {split}"


def _run(netns: Any, box: Any, root: Path, *, hosts: list[str], steps: int,
         extra: str = "") -> tuple[float, str]:
    before = set((root / "runs").glob("*"))
    box.write_cluster_toml(sys.executable, run=RUN.format(steps=steps, extra=extra),
                           order=hosts)
    done = netns.corral(box, "run", timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"corral run on {hosts} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    run_dir = next(p for p in (root / "runs").glob("*") if p not in before)
    return samples_per_s(run_dir)


def shaped_main(rounds: int, steps: int, host_cpu: float | None = None) -> int:
    """Part 2 (see the module); exits 2 where namespace hosts cannot be made."""
    from bench._hosts_cpu import HostsCpuLimit
    from tests.remote import netns
    from tests.remote.netns_links import GIGABIT, WIFI, shape, shaped_as

    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"bench/lowcomm.py --shaped: {reason}", file=sys.stderr)
        return 2
    share = f"each host {host_cpu:g} core" if host_cpu else "the hosts share them"
    print(f"{os.cpu_count()} cores, {share}; n3's link: {shaped_as(WIFI)}; n1, n2: "
          f"{shaped_as(GIGABIT)}; simple_cnn, B=48, {steps} steps", flush=True)
    ways = ["n1 alone", "n2 alone", "n3 alone", "exact", "local"]
    found: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        box = netns.build(root, hosts=3)
        limit = None
        try:
            for index, link in enumerate((GIGABIT, GIGABIT, WIFI)):
                shape(box, index, link)
            if host_cpu:
                limit = HostsCpuLimit(box, host_cpu)
            for round_index in range(rounds):
                order = ways if round_index % 2 == 0 else list(reversed(ways))
                for way in order:
                    hosts = [way.split()[0]] if way.endswith("alone") else ["n1", "n2", "n3"]
                    extra = 'exchange = "local"\n' if way == "local" else ""
                    value, note = _run(netns, box, root, hosts=hosts, steps=steps, extra=extra)
                    found[way].append(value)
                    print(f"round {round_index + 1}: {way:<9} {value:8.1f} samples/s  ({note})",
                          flush=True)
        finally:
            box.close()
            if limit is not None:
                limit.close()
    median = {way: statistics.median(values) for way, values in found.items()}
    solo = sum(median[f"n{i} alone"] for i in (1, 2, 3))
    print(f"medians over {rounds} rounds: " + ", ".join(f"{w} {v:.1f}" for w, v in median.items()))
    print(f"sum of solo {solo:.1f} samples/s; local / sum of solo {median['local'] / solo:.2f} "
          f"(goal >= 0.8); local / exact {median['local'] / median['exact']:.2f}")
    return 0
