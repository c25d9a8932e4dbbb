"""``corral check`` (and ``--dry-run``, the console's check view) says before the run which host
will sit out of the gradient exchange and what each adds, from the profiles stored on each host
and its link; without them it says what to do instead of guessing."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from console.tables import check_table
from profiles.host import hostname
from profiles.profile import Profile
from profiles.store import save_profile
from remote.api import CheckReport
from remote.checks.estimate_facts import (
    EstimateProbe,
    cluster_estimate,
    estimate_probe,
    host_link,
    host_profile,
    parse_estimate_probe,
)
from remote.config.cluster import ClusterConfig
from remote.config.read import parse_cluster

SLOWDOWNS = {"gpu-box": 1.0, "laptop": 2.0, "cpu-box": 40.0}
"""Each host's emulated slowdown (the part of a profile's key that tells them apart here)."""
PER_SAMPLE_S = {"gpu-box": 0.0005, "laptop": 0.001, "cpu-box": 0.02}
"""0.5 ms/sample on the GPU box, 1 ms on the laptop, 20 ms on the CPU box."""


def cluster(tmp_path: Path, host_lines: str = "") -> ClusterConfig:
    hosts = "".join(f'[[hosts]]\nname = "{name}"\naddress = "local"\nnproc = 1\ngpus = 0\n'
                    f"slowdown = {slowdown}\n{host_lines}" for name, slowdown in SLOWDOWNS.items())
    text = (f'[cluster]\nname = "t"\nmaster = "gpu-box"\nrun_root = "{tmp_path}/runs"\n'
            f'{hosts}[run]\nsteps = 2\nglobal_batch = 512\nmodel = "resnet18"\n')
    return parse_cluster(text, path=tmp_path / "cluster.toml")


def profile(name: str, *, host: str | None = None, age_s: float = 0.0,
            threads: int = 1) -> Profile:
    """A profile as `corral profile` leaves it, with resnet18's 45 MB of gradient."""
    made = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=age_s)
    return Profile(host=host or hostname(), device="cpu", device_name=f"{name} cpu",
                   model="resnet18", torch_version="2.9.0", threads=threads,
                   slowdown=SLOWDOWNS[name], created=made.isoformat(), batches=(8, 16),
                   step_s=(0.01, 0.02), a=0.005, c=PER_SAMPLE_S[name],
                   gradient_bytes=45_000_000)


def store_profiles(root: Path) -> None:
    for name in SLOWDOWNS:
        save_profile(profile(name), root=root)


def net_class(tmp_path: Path) -> Path:
    """A ``/sys/class/net`` with a 10 Gbit/s eth0 and a loopback that shows no speed."""
    net = tmp_path / "net"
    (net / "eth0").mkdir(parents=True)
    (net / "eth0" / "speed").write_text("10000\n")
    (net / "lo").mkdir()
    return net


def probe_here(store: Path, net: Path) -> EstimateProbe:
    """The check's estimate section run by a shell on this machine, as on every host."""
    done = subprocess.run(["sh", "-c", estimate_probe("resnet18", net_class=str(net))],
                          env={**os.environ, "CORRAL_PROFILE_DIR": str(store)},
                          capture_output=True, text=True, check=True, timeout=30)
    return parse_estimate_probe(done.stdout)


def table_text(report: CheckReport) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False, color_system=None).print(
        check_table(report))
    return out.getvalue()


def test_check_says_the_slow_host_will_sit_out_and_what_the_others_add(tmp_path: Path) -> None:
    config = cluster(tmp_path)
    store_profiles(tmp_path / "store")
    found = probe_here(tmp_path / "store", net_class(tmp_path))
    assert found.node == hostname() and found.link_mbit == {"eth0": 10000.0}
    assert host_link(config.hosts[1], "eth0", found) == 1.25e9
    probes = {h.name: found for h in config.hosts}
    verdicts = cluster_estimate(config, {h.name: 1 for h in config.hosts}, probes,
                                {h.name: "eth0" for h in config.hosts})
    assert [v.pays for v in verdicts] == [True, True, False]
    text = table_text(CheckReport(items=(), estimate=verdicts))
    assert "adding `laptop`: +" in text and "% throughput" in text
    assert "`cpu-box`: would sit out" in text
    saved, added = (f"{s * 1000:.1f} ms" for s in (verdicts[2].compute_saved_s,
                                                     verdicts[2].exchange_added_s))
    assert f"its compute saved {saved}, its exchange adds {added}" in text
    assert "FAIL" not in text  # the estimate informs; it never fails the check


def test_a_sharded_run_s_check_keeps_the_slow_host_computing(tmp_path: Path) -> None:
    """``[run] shard_state``: benched, the CPU box would still reduce and send its slice, so
    the check has it compute its share; only leaving it out of the run saves its exchange."""
    config = cluster(tmp_path)
    sharded = dataclasses.replace(config, run=dataclasses.replace(config.run,
                                                                  shard_state="gradients"))
    store_profiles(tmp_path / "store")
    found = probe_here(tmp_path / "store", net_class(tmp_path))
    facts = ({h.name: 1 for h in config.hosts}, {h.name: found for h in config.hosts},
             {h.name: "eth0" for h in config.hosts})
    assert [v.pays for v in cluster_estimate(config, *facts)] == [True, True, False]
    verdicts = cluster_estimate(sharded, *facts)
    assert [v.pays for v in verdicts] == [True, True, True]
    assert verdicts[2].gain < 0  # the run would be faster without it, were its memory not needed
    assert "adding `cpu-box`: -" in table_text(CheckReport(items=(), estimate=verdicts))


def test_without_profiles_or_a_link_speed_the_check_says_what_to_do(tmp_path: Path) -> None:
    config = cluster(tmp_path)
    net = net_class(tmp_path)
    nprocs = {h.name: 1 for h in config.hosts}
    empty = probe_here(tmp_path / "empty", net)
    verdicts = cluster_estimate(config, nprocs, {h.name: empty for h in config.hosts},
                                {h.name: "eth0" for h in config.hosts})
    assert table_text(CheckReport(items=(), estimate=verdicts)).count(
        "no estimate: run `corral profile`") == 3
    # Loopback (hosts that share a machine) shows no speed: named, not guessed, until
    # cluster.toml gives the link.
    store_profiles(tmp_path / "store")
    found = {h.name: probe_here(tmp_path / "store", net) for h in config.hosts}
    verdicts = cluster_estimate(config, nprocs, found, {h.name: "lo" for h in config.hosts})
    assert {v.missing for v in verdicts} == {"link speed"}
    assert ("set link_gbit in the [[hosts]] entry named 'laptop'"
            in table_text(CheckReport(items=(), estimate=verdicts)))
    given = cluster(tmp_path, "link_gbit = 10\n")
    verdicts = cluster_estimate(given, nprocs, found, {h.name: "lo" for h in config.hosts})
    assert [v.pays for v in verdicts] == [True, True, False]


def test_only_the_hosts_own_newest_profile_at_its_slowdown_and_threads_counts(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_profile(dataclasses.replace(profile("laptop", age_s=3600), c=0.9), root=store)
    save_profile(profile("laptop", threads=4), root=store)  # a newer one at other threads
    save_profile(dataclasses.replace(profile("laptop", host="elsewhere"), c=0.7), root=store)
    (store / "broken.toml").write_text("not a profile")
    found = probe_here(store, net_class(tmp_path))
    assert len(found.profiles) == 3
    laptop = cluster(tmp_path, "threads = 1\n").hosts[1]
    chosen = host_profile(laptop, "resnet18", found)
    assert chosen is not None and chosen.c == 0.9 and chosen.host == hostname()
    unset = cluster(tmp_path).hosts[1]  # threads not set: the newest at any threads
    assert host_profile(unset, "resnet18", found).threads == 4  # type: ignore[union-attr]
    assert host_profile(cluster(tmp_path).hosts[2], "resnet18", found) is None
