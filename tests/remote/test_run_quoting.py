"""Every string from cluster.toml reaches the launcher as data, never as shell code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runkit import launch_local_until_exit

from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.records.runs import run_dir_for
from remote.run.launch import LaunchPlan

# Records its arguments and the variables corral sets, then exits: stands in for python.
FAKE_PYTHON = """#!{python}
import json, os, sys
keep = ("CORRAL_HOST", "CORRAL_RUN_ID", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "PYTHONPATH",
        "EXTRA")
with open("argv.json", "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keep}}}}, out)
"""


def _nasty(canary: Path) -> str:
    return f"x'\"; touch {canary}; $(touch {canary}) `touch {canary}` |&<>"


def test_metacharacters_in_every_field_never_execute(tmp_path: Path) -> None:
    import asyncio

    canary = tmp_path / "canary"
    nasty = _nasty(canary)
    odd = tmp_path / "odd dir; $(touch canary)"
    odd.mkdir()
    fake = odd / "py thon"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    # Host names and interfaces are validated by the config; everything else is free text.
    host = HostSection(name="h-1", address="local", python=str(fake),
                       workdir=str(odd / "work"), gpus=0, nproc=1, threads=1,
                       env={"EXTRA": nasty})
    run = RunSection(data_dir=nasty, steps=3)
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="q", master=host.name, run_root=str(odd / "runs")),
        hosts=(host,), run=run)
    run_id = "q-20261121-000000-abcdef"
    plan = LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id),
                      code_digest="d" * 64, master_addr="127.0.0.1", port=29999, nnodes=1,
                      user=None)
    place = HostPlan(host=host, node_rank=0, first_rank=0, nproc=1, device="cpu", gpus=0,
                     visible_devices="", interface=nasty, local_addr="127.0.0.1")
    asyncio.run(launch_local_until_exit(config, plan, place))
    assert not canary.exists() and not (odd / "canary").exists()
    recorded = json.loads((Path(plan.run_dir) / "argv.json").read_text())
    argv, env = recorded["argv"], recorded["env"]
    assert argv[argv.index("--data-dir") + 1] == nasty
    assert argv[argv.index("--run-dir") + 1] == plan.run_dir
    assert argv[argv.index("--log-dir") + 1] == f"logs/{host.name}/ranks"
    assert env["EXTRA"] == nasty and env["GLOO_SOCKET_IFNAME"] == nasty
    assert env["CORRAL_HOST"] == host.name
    assert env["PYTHONPATH"] == str(odd / "work" / "code" / ("d" * 64))
