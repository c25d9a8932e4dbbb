"""Fake WSL2 and macOS hosts among namespace hosts: their facts as the probe reads them (a
``uname`` and ``wslinfo`` on the host's PATH answer as those systems do), with a WSL2 host in
NAT mode behind a NAT'd address, one in mirrored mode on the hosts' network, and a Mac. The
check refuses the NAT'd WSL2 host with the exact fix and the Mac in one line, and passes the
mirrored one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

RUN = 'model = "simple_cnn"\ndataset = "synthetic_image"\nsteps = 2\n'
WSL_RELEASE = "5.15.153.1-microsoft-standard-WSL2"


def fake_system(root: Path, name: str, system: str, release: str, mode: str | None) -> str:
    """A directory holding ``uname`` (and ``wslinfo``) that answer as ``system``; the TOML
    line that puts it first on the host's PATH."""
    folder = root / f"fake-{name}"
    folder.mkdir(exist_ok=True)
    uname = folder / "uname"
    uname.write_text(f'#!/bin/sh\ncase "$1" in -s) echo {system};; -r) echo {release};; '
                     '*) exec /usr/bin/uname "$@";; esac\n')
    uname.chmod(0o755)
    if mode is not None:
        wslinfo = folder / "wslinfo"
        wslinfo.write_text(f'#!/bin/sh\n[ "$1" = --networking-mode ] && echo {mode}\n')
        wslinfo.chmod(0o755)
    return f'env = {{ PATH = "{folder}:/usr/sbin:/usr/bin:/bin" }}\n'


def test_wsl2_nat_and_a_mac_are_refused_before_launch_wsl2_mirrored_passes(
    box: netns.NetnsCluster,
) -> None:
    natted = netns.add_natted_host(box, router=2, name="win")
    lines = {"n2": fake_system(box.root, "n2", "Linux", WSL_RELEASE, "mirrored"),
             "n3": fake_system(box.root, "n3", "Darwin", "23.4.0", None),
             natted.name: fake_system(box.root, "win", "Linux", WSL_RELEASE, "nat")}
    box.write_cluster_toml(sys.executable, run=RUN, host_lines=lines)
    done = netns.corral(box, "run", timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "launching" not in output, output[-3000:]
    rows = {(row[0], row[1]): row for row in netns.check_rows(done.stdout)}
    assert rows["n1", "platform"][2] == "ok" and rows["n1", "platform"][3].startswith("Linux ")
    assert rows["n2", "platform"][2] == "ok"
    assert rows["n2", "platform"][3].startswith("WSL2 (mirrored networking)")
    mac = rows["n3", "platform"]
    assert mac[2] == "FAIL" and mac[3].startswith("macOS cannot train with Linux ranks")
    wsl = rows["win", "platform"]
    assert wsl[2] == "FAIL"
    assert wsl[3].startswith("WSL2 in NAT mode: the other hosts cannot reach its ranks at "
                             "10.88.0.2"), wsl
    assert "networkingMode=mirrored" in wsl[4] and "wsl --shutdown" in wsl[4]
    assert "win looks NAT'd" in netns.mesh_text(done.stdout)
    assert box.processes_left() == {}
