"""``bench/lowcomm.py --shaped``: ``exchange = "local"`` against exact over shaped links.

Three network-namespace hosts with their own sshd (tests/remote/netns.py), one rank and one
thread each: n1 and n2 on 1 Gbit/s, n3 behind 50 Mbit/s Wi-Fi (its rate and 1 % loss; 5 ± 2 ms
of delay too where the kernel has netem). The same run (same seed, data and batch: simple_cnn,
or with ``--shaped-workload lm`` the LM of ``--lm-shape``) several ways, every way once per
round, rounds interleaved (order reversed every other round): each host alone (its solo
throughput), the three hosts exact (the balancer benches n3), and the three hosts local once
per ``--shaped-settings`` setting (``outer_compression[+overlap]``; each host an island, the
round length chosen by the run). Every run is judged over its steady window of wall time
(bench/lowcomm_window.py: exact and solo from the balancer's settling, local after the first
round), with each host's cores in that window and the share of CFS periods its quota ran out in
(``--host-cpu``: read from the hosts' cgroups every ``SAMPLE_S``), so a host that never reached
its quota shows as such; a local run's islands each say their compute, exchange, wait for a
slower island and other. Reported per round and as medians: each local setting against the sum
of the same round's solo throughputs (goal >= 0.9x), against exact, against what the solos
would give with the cores each host got in the local run, and its exposed exchange's share of
the window (goal <= 5 %).

The hosts share this machine's cores: three ranks on fewer than three cores cannot reach the
sum of what each does alone, and the output says how many cores there were. ``--host-cpu
CORES`` gives every host a CPU share of its own instead (bench/many_hosts.py's cgroup quota:
0.6 each puts three hosts within two cores), as machines of their own would have.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._hosts_cpu import HostCpuReading, HostsCpuEach
from bench.lowcomm_window import (
    IslandShare,
    chosen_rounds,
    host_cores,
    island_shares,
    of_kind,
    steady_window,
)

RUN = ('{workload}\nsteps = {steps}\ncheckpoint_every = 100000\npolicy = "dynamic"\n'
       'seed = 5\n{extra}')
CNN = 'model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 4096\nglobal_batch = 48'
LM = ('task = "causal_lm"\nglobal_batch = 8\noptimizer = "adamw"\nlr = 0.002\n'
      'task_options = {{ model = "{model}", data = "{data}", seq_len = 64, lora_r = 0 }}')
SOLO_SHARE = 3
"""The solo runs take 1/SOLO_SHARE of the local runs' global steps (each host alone trains
about what it trains as one of the three islands), exact runs half."""
SAMPLE_S = 0.5
"""How often each host's CPU clocks are read while a run goes on."""


class Sampler:
    """Each host's CPU clocks every ``SAMPLE_S`` while a run goes on, in a thread of its own
    (nothing read without ``--host-cpu``: the hosts then have no cgroups of their own)."""

    def __init__(self, each: HostsCpuEach | None) -> None:
        self.each = each

    @contextlib.contextmanager
    def during(self) -> Iterator[list[HostCpuReading]]:
        readings: list[HostCpuReading] = []
        each = self.each
        if each is None:
            yield readings
            return
        stop = threading.Event()

        def sample() -> None:
            readings.append(each.read())
            while not stop.wait(SAMPLE_S):  # a period between readings, not a sync
                readings.append(each.read())

        thread = threading.Thread(target=sample, name="host-cpu", daemon=True)
        thread.start()
        try:
            yield readings
        finally:
            stop.set()
            thread.join()
            readings.append(each.read())


@dataclass(frozen=True)
class WayRun:
    """One run of one way, over its steady window (bench/lowcomm_window.py)."""

    rate: float
    """Samples per second of wall time."""
    cores: dict[str, float]
    """Each host's cores over the window (its sshd and all it started), by host."""
    throttled: dict[str, float]
    """Each host's share of CFS periods its quota ran out in, by host."""
    exposed: float = 0.0
    """Local: the exposed exchange over the window (the least island's ``exchange_s``)."""
    islands: tuple[IslandShare, ...] = ()
    note: str = ""


def _events(run_dir: Path) -> list[dict[str, Any]]:
    path = next(run_dir.rglob("metrics/rank-0.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def way_run(events: list[dict[str, Any]], readings: list[HostCpuReading], names: list[str],
            hosts: list[str]) -> WayRun:
    """What one run of ``hosts`` gave (``names``: every host of the box, the readings'
    order)."""
    window = steady_window(events)
    cores, throttled = host_cores(readings, window)
    keep = [names.index(h) for h in hosts]
    by_host = {names[i]: cores[i] for i in keep} if cores else {}
    throttled_by = {names[i]: throttled[i] for i in keep} if throttled else {}
    if of_kind(events, "round"):
        islands = island_shares(events, window)
        return WayRun(rate=window.rate, cores=by_host, throttled=throttled_by,
                      exposed=islands[0].exchange if islands else 0.0, islands=tuple(islands),
                      note=chosen_rounds(events))
    last = of_kind(events, "rebalance")
    return WayRun(rate=window.rate, cores=by_host, throttled=throttled_by,
                  note=f"split {last[-1]['split'] if last else None}")


def _run(netns: Any, box: Any, root: Path, sampler: Sampler, *, hosts: list[str], run: str
         ) -> WayRun:
    before = set((root / "runs").glob("*"))
    box.write_cluster_toml(sys.executable, run=run, order=hosts)
    with sampler.during() as readings:
        done = netns.corral(box, "run", timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"corral run on {hosts} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    run_dir = next(p for p in (root / "runs").glob("*") if p not in before)
    return way_run(_events(run_dir), readings, [n.name for n in box.nodes], hosts)


def _way_run(way: str, args: Any, workload: str) -> tuple[list[str], str]:
    """A way's hosts and ``[run]`` section: ``nK alone``, ``exact`` or ``local SETTING``."""
    if way.endswith("alone"):
        hosts, steps, extra = [way.split()[0]], args.steps // SOLO_SHARE, ""
    elif way == "exact":
        hosts, steps, extra = ["n1", "n2", "n3"], args.steps // 2, ""
    else:
        compression, _, overlap = way.split()[1].partition("+")
        hosts, steps = ["n1", "n2", "n3"], args.steps
        extra = (f'exchange = "local"\nouter_compression = "{compression}"\n'
                 f"outer_overlap = {'true' if overlap else 'false'}\n")
    return hosts, RUN.format(workload=workload, steps=steps, extra=extra)


def _workload(args: Any, scratch: Path) -> tuple[str, str]:
    """The ``[run]`` lines of the workload and its words."""
    if args.shaped_workload == "cnn":
        return CNN, "simple_cnn, B=48"
    from bench.lowcomm_workloads import workload_flags

    flags, _ = workload_flags("lm", scratch, False, args.lm_shape)
    options = dict(flags[i + 1].split("=", 1) for i, f in enumerate(flags)
                   if f == "--task-option")
    shape = args.lm_shape
    size = f"{shape.hidden_size},{shape.intermediate_size},{shape.layers}" if shape else "tiny"
    return (LM.format(model=options["model"], data=options["data"]),
            f"LM {size}, B=8 sequences of 64, AdamW")


def shaped_main(args: Any) -> int:
    """Part 2 (see the module); exits 2 where namespace hosts cannot be made."""
    from bench._hosts_cpu import HostsCpuLimit
    from tests.remote import netns
    from tests.remote.netns_links import GIGABIT, WIFI, shape, shaped_as

    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"bench/lowcomm.py --shaped: {reason}", file=sys.stderr)
        return 2
    host_cpu = args.host_cpu
    ways = ["n1 alone", "n2 alone", "n3 alone", "exact",
            *(f"local {s}" for s in args.shaped_settings.split(","))]
    found: dict[str, list[WayRun]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workload, words = _workload(args, root)
        share = f"each host {host_cpu:g} core" if host_cpu else "the hosts share them"
        print(f"{os.cpu_count()} cores, {share}; n3's link: {shaped_as(WIFI)}; n1, n2: "
              f"{shaped_as(GIGABIT)}; {words}, {args.steps} steps (local)", flush=True)
        box = netns.build(root, hosts=3)
        limit = each = None
        try:
            for index, link in enumerate((GIGABIT, GIGABIT, WIFI)):
                shape(box, index, link)
            if host_cpu:
                limit = HostsCpuLimit(box, host_cpu)
                each = HostsCpuEach(box, limit)
            sampler = Sampler(each)
            for round_index in range(args.rounds):
                order = ways if round_index % 2 == 0 else list(reversed(ways))
                for way in order:
                    hosts, run = _way_run(way, args, workload)
                    found[way].append(_run(netns, box, root, sampler, hosts=hosts, run=run))
                    _say(round_index, way, found[way][-1])
        finally:
            box.close()
            for cgroups in (each, limit):
                if cgroups is not None:
                    cgroups.close()
    _summary(found, args.rounds)
    return 0


def _say(round_index: int, way: str, run: WayRun) -> None:
    """One run's line: its throughput, each host's cores (and throttled periods), and a local
    run's islands."""
    cores = ", ".join(f"{h} {c:.2f} ({run.throttled.get(h, 0.0):.0%} thr.)"
                      for h, c in run.cores.items())
    print(f"round {round_index + 1}: {way:<18} {run.rate:8.1f} samples/s  cores: "
          f"{cores or 'not counted'}  ({run.note}; load {os.getloadavg()[0]:.1f})", flush=True)
    for i, island in enumerate(run.islands):
        print(f"    island {i}: compute {island.compute:.1%} at {island.speed:.1f} samples/s "
              f"({island.cores:.2f} cores), exchange {island.exchange:.1%}, wait "
              f"{island.wait:.1%}, other {island.other:.1%}", flush=True)


def _summary(found: dict[str, list[WayRun]], rounds: int) -> None:
    """Per round (the ways back to back) and as medians: every local setting against the
    solo sum and exact, and against what the solos would give with the cores each host got
    in the local run (a host's solo samples per core times its local cores)."""
    median = {way: statistics.median(r.rate for r in runs) for way, runs in found.items()}
    solos = [found[f"n{i} alone"] for i in (1, 2, 3)]
    print(f"medians over {rounds} rounds: " + ", ".join(f"{w} {v:.1f}" for w, v in median.items()))
    solo = sum(median[f"n{i} alone"] for i in (1, 2, 3))
    print(f"sum of solo {solo:.1f} samples/s; exact / sum of solo {median['exact'] / solo:.2f}")
    for way, runs in found.items():
        if not way.startswith("local"):
            continue
        plain, at_cores = [], []
        for r, run in enumerate(runs):
            plain.append(run.rate / sum(s[r].rate for s in solos))
            if run.cores and all(s[r].cores for s in solos):
                would = sum(s[r].rate / s[r].cores[h] * run.cores[h]
                            for s, h in zip(solos, ("n1", "n2", "n3"), strict=True))
                at_cores.append(run.rate / would)
        exposed = statistics.median(run.exposed for run in runs)
        words = ", ".join(f"{v:.2f}" for v in plain)
        print(f"{way}: / sum of solo {statistics.median(plain):.2f} per round [{words}] "
              f"(goal >= 0.9), / exact {median[way] / median['exact']:.2f}, exposed exchange "
              f"{exposed:.1%} of the window (goal <= 5 %)")
        if at_cores:
            words = ", ".join(f"{v:.2f}" for v in at_cores)
            print(f"{way}: / the solos at the cores each host got in it "
                  f"{statistics.median(at_cores):.2f} per round [{words}]")
