"""The launch plan's CPU side: allocator environment per host, cores for hosts on one machine,
and what ``corral check`` says about both."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from remote.checks.plan import LaunchFacts, plan_cluster
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.config.task_code import user_code
from remote.hosts.cpu_placement import (
    PROBE_SECTION,
    HostCpuFacts,
    check_items,
    host_plans,
    parse_probe,
)
from remote.run.launch import LaunchPlan, launcher_command
from trainer.placement import GLIBC_TUNING, find_allocators, parse_cpulist

TC = "/usr/lib/libtcmalloc_minimal.so.4"


def cluster(*hosts: HostSection) -> ClusterConfig:
    return ClusterConfig(path=Path("cluster.toml"),
                         cluster=ClusterSection(name="t", master=hosts[0].name), hosts=hosts)


def cpu_host(name: str, **extra: object) -> HostSection:
    return HostSection(name=name, address="local", gpus=0, **extra)  # type: ignore[arg-type]


def facts(boot: str, cpus: str, **libraries: str) -> HostCpuFacts:
    return HostCpuFacts(boot_id=boot, cpus=parse_cpulist(cpus), libraries=libraries)


def test_the_probe_reads_this_machine() -> None:
    out = subprocess.run(["sh", "-c", PROBE_SECTION], capture_output=True, text=True,
                         check=True).stdout
    found = parse_probe(out)
    assert found.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert found.cpus == frozenset(os.sched_getaffinity(0))
    assert found.libraries == find_allocators()


def test_hosts_on_one_machine_share_its_cores_out_disjointly() -> None:
    config = cluster(cpu_host("a", nproc=2), cpu_host("b"), cpu_host("c"),
                     cpu_host("other"))
    plans = host_plans(config, {"a": facts("m1", "0-7"), "b": facts("m1", "0-7"),
                                "c": facts("m1", "0-7"), "other": facts("m2", "0-3")},
                       {"a": 2, "b": 1, "c": 1, "other": 1}, {})
    # Four ranks on machine m1: a gets two ranks' worth, b and c one each, none overlapping.
    assert plans["a"].flags == ("--cores", "0-3")
    assert plans["b"].flags == ("--cores", "4-5")
    assert plans["c"].flags == ("--cores", "6-7")
    # A host alone on its machine places its own ranks.
    assert plans["other"].flags == ()
    assert plans["a"].cores == ("2 rank(s) on cores 0-1 | 2-3, 2 thread(s) each (its share: "
                                "4 ranks of 3 hosts on one machine with 8 core(s))")


def test_more_ranks_than_cores_on_a_machine_pin_nothing() -> None:
    config = cluster(cpu_host("a"), cpu_host("b"), cpu_host("c"))
    two_cores = {h: facts("m", "0-1") for h in "abc"}
    plans = host_plans(config, two_cores, {"a": 1, "b": 1, "c": 1}, {})
    assert all(p.flags == ("--no-pin-cores",) for p in plans.values())
    assert plans["a"].cores == ("not pinned: 3 ranks of 3 hosts on one machine with 2 core(s), "
                                "1 thread(s) per rank")


def test_ranks_sharing_a_machine_share_its_threads_too(tmp_path: Path) -> None:
    """Three ranks on two cores, no ``threads`` key: one thread each (2 ÷ 3, at least 1), in
    the script's OMP_NUM_THREADS and the trainer's --threads; a host's own key wins."""
    config = cluster(cpu_host("a"), cpu_host("b"), cpu_host("c", threads=2))
    two_cores = {h: facts("m", "0-1") for h in "abc"}
    plans = host_plans(config, two_cores, {"a": 1, "b": 1, "c": 1}, {})
    assert [plans[h].threads for h in "abc"] == [1, 1, None]
    launch_facts = LaunchFacts(gpus={}, interfaces={}, port=None, cpu=two_cores)
    plan = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d", master_addr="127.0.0.1",
                      port=1234, nnodes=3, user=None)
    places = plan_cluster(config, launch_facts, "127.0.0.1").hosts
    words = shlex.split(launcher_command(config, plan, places[0]).split("; s=$?")[0])
    assert words[words.index("--threads") + 1] == "1"
    last = shlex.split(launcher_command(config, plan, places[2]).split("; s=$?")[0])
    assert last[last.index("--threads") + 1] == "2"
    (tmp_path / "train.py").write_text("print('training')\n")
    script = ClusterConfig(path=tmp_path / "cluster.toml", cluster=config.cluster,
                           hosts=config.hosts, run=RunSection(script="train.py"))
    with_script = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d",
                             master_addr="127.0.0.1", port=1234, nnodes=3,
                             user=user_code(script.run, tmp_path))
    words = shlex.split(launcher_command(script, with_script, places[1]).split("; s=$?")[0])
    assert "OMP_NUM_THREADS=1" in words


def test_cluster_toml_settings_win() -> None:
    config = cluster(cpu_host("a", cores="2-3", threads=1), cpu_host("b", pin_cores=False),
                     cpu_host("c", allocator="off"), cpu_host("d", allocator="glibc"))
    found = {h: facts("m", "0-7", tcmalloc=TC) for h in "abcd"}
    plans = host_plans(config, found, dict.fromkeys("abcd", 1), {})
    assert plans["a"].flags == ("--cores", "2-3")
    assert plans["a"].cores == "1 rank(s) on cores 2-3, 1 thread(s) each"
    assert plans["b"].flags == ("--no-pin-cores",)
    assert plans["a"].env["LD_PRELOAD"] == TC and plans["a"].allocator == "tcmalloc"
    assert plans["c"].env == {"CORRAL_ALLOCATOR": "off"}
    assert plans["d"].env == {"CORRAL_ALLOCATOR": "glibc", **GLIBC_TUNING}


def test_the_launcher_command_carries_the_allocator_and_the_cores() -> None:
    host = cpu_host("a", env={"LD_PRELOAD": "/opt/my lib.so"})
    config = cluster(host, cpu_host("b"))
    found = {"a": facts("m", "0-3", tcmalloc=TC), "b": facts("m", "0-3")}
    plan = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d", master_addr="127.0.0.1",
                      port=1234, nnodes=2, user=None)
    # The launch plan carries each host's CPU plan into its command.
    launch_facts = LaunchFacts(gpus={}, interfaces={}, port=None, cpu=found)
    place = plan_cluster(config, launch_facts, "127.0.0.1").hosts[0]
    cmd = launcher_command(config, plan, place)
    words = shlex.split(cmd.split("; s=$?")[0])
    assert f"LD_PRELOAD={TC}:/opt/my lib.so" in words and "CORRAL_ALLOCATOR=tcmalloc" in words
    assert words[words.index("--cores") + 1] == "0-1"


def test_check_names_a_missing_allocator_with_the_fix() -> None:
    config = cluster(cpu_host("a", allocator="jemalloc"), cpu_host("b"))
    items = check_items(config, {"a": facts("m", "0-1", tcmalloc=TC), "b": facts("n", "0-1")},
                        {"a": 1, "b": 1}, {})
    (alloc_a, cores_a, alloc_b, _) = items
    assert not alloc_a.ok and "no libjemalloc" in alloc_a.detail
    assert 'allocator = "auto"' in alloc_a.hint and "apt-get install" in alloc_a.hint
    assert alloc_b.ok and alloc_b.detail.startswith("glibc, tuned") and "install" in alloc_b.detail
    assert cores_a.ok and cores_a.detail == "1 rank(s) on cores 0-1, 2 thread(s) each"
