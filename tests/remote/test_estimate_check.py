"""``corral check`` (and ``--dry-run``, the console's check view) says before the run which host
will sit out of the gradient exchange and what each adds, from the stored profiles and the links;
without them it says to run ``corral profile`` instead of guessing."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from console.tables import check_table
from profiles.host import hostname
from profiles.store import Profile, save_profile
from remote.api import CheckReport
from remote.checks.estimate_facts import cluster_estimate, local_link, local_profile
from remote.config.read import parse_cluster

SLOWDOWNS = {"gpu-box": 1.0, "laptop": 2.0, "cpu-box": 40.0}
"""Each host's emulated slowdown (the part of a profile's key that tells them apart here)."""


def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    hosts = "".join(f'[[hosts]]\nname = "{name}"\naddress = "local"\nnproc = 1\ngpus = 0\n'
                    f"slowdown = {slowdown}\n" for name, slowdown in SLOWDOWNS.items())
    text = (f'[cluster]\nname = "t"\nmaster = "gpu-box"\nrun_root = "{tmp_path}/runs"\n'
            f'{hosts}[run]\nsteps = 2\nglobal_batch = 512\nmodel = "resnet18"\n')
    return parse_cluster(text, path=tmp_path / "cluster.toml")


def store_profiles(root: Path) -> None:
    """Profiles as `corral profile` leaves them: 0.5 ms/sample on the GPU box, 1 ms on the
    laptop, 20 ms on the CPU box; resnet18's 45 MB of gradient."""
    per_sample = {"gpu-box": 0.0005, "laptop": 0.001, "cpu-box": 0.02}
    for name, slowdown in SLOWDOWNS.items():
        save_profile(Profile(
            host=hostname(), device="cpu", device_name=f"{name} cpu", model="resnet18",
            torch_version="2.9.0", threads=1, slowdown=slowdown,
            created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            batches=(8, 16), step_s=(0.01, 0.02), a=0.005, c=per_sample[name],
            gradient_bytes=45_000_000), root=root)


def ten_gbit_link(tmp_path: Path) -> Path:
    net = tmp_path / "net"
    (net / "eth0").mkdir(parents=True)
    (net / "eth0" / "speed").write_text("10000\n")
    return net


def table_text(report: CheckReport) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False, color_system=None).print(
        check_table(report))
    return out.getvalue()


def test_check_says_the_slow_host_will_sit_out_and_what_the_others_add(tmp_path: Path) -> None:
    config = cluster(tmp_path)
    store_profiles(tmp_path / "store")
    net = ten_gbit_link(tmp_path)
    profiles = {h.name: local_profile(h, "resnet18", root=tmp_path / "store")
                for h in config.hosts}
    links = {h.name: local_link(h, "eth0", net_class=net) for h in config.hosts}
    assert links["laptop"] == 1.25e9
    verdicts = cluster_estimate(config, {h.name: 1 for h in config.hosts}, profiles, links)
    assert [v.pays for v in verdicts] == [True, True, False]
    text = table_text(CheckReport(items=(), estimate=verdicts))
    assert "adding `laptop`: +" in text and "% throughput" in text
    assert "`cpu-box`: would sit out" in text
    saved, added = (f"{s * 1000:.1f} ms" for s in (verdicts[2].compute_saved_s,
                                                     verdicts[2].exchange_added_s))
    assert f"its compute saved {saved}, its exchange adds {added}" in text
    assert "FAIL" not in text  # the estimate informs; it never fails the check


def test_without_profiles_the_check_says_to_run_corral_profile(tmp_path: Path) -> None:
    config = cluster(tmp_path)
    net = ten_gbit_link(tmp_path)
    profiles = {h.name: local_profile(h, "resnet18", root=tmp_path / "empty")
                for h in config.hosts}
    links = {h.name: local_link(h, "eth0", net_class=net) for h in config.hosts}
    verdicts = cluster_estimate(config, {h.name: 1 for h in config.hosts}, profiles, links)
    text = table_text(CheckReport(items=(), estimate=verdicts))
    assert text.count("no estimate: run `corral profile`") == 3
    # A link that shows no speed (loopback, a virtual interface) is named, not guessed.
    assert local_link(config.hosts[0], "lo", net_class=net) is None


@pytest.mark.slow
async def test_a_real_check_of_a_local_cluster_carries_the_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.remote.test_checks import local_host, run_check, write_cluster

    store_profiles(tmp_path / "store")
    monkeypatch.setenv("CORRAL_PROFILE_DIR", str(tmp_path / "store"))
    hosts = "".join(local_host(name, slowdown=repr(s)) for name, s in SLOWDOWNS.items())
    config = write_cluster(tmp_path, hosts.replace("{tmp}", str(tmp_path)).replace(
        'name = "gpu-box"', 'name = "a"'))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, model="resnet18"))
    report = await run_check(config)
    assert [v.host for v in report.estimate] == ["a", "laptop", "cpu-box"]
    # Every host's profile is found; the hosts of one machine talk over loopback, which shows
    # no link speed, so the estimate names that rather than guessing (and nothing fails).
    assert {v.missing for v in report.estimate} <= {"link speed", "others"}
    assert "no estimate: its link speed is not known" in table_text(report) and report.ok
