"""A host's ``env`` values (tokens, passwords) reach its processes but no command line, and a
run's files are readable by the run's user only."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path

from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.hosts.transport import LocalTransport, Transport
from remote.records.runs import run_dir_for
from remote.run.launch import LaunchPlan, launcher_command
from tests.remote.runkit import launch_local_until_exit

SECRET = "hf_s3cr3t 'quoted' $(not run)\nsecond line"
ENV = {"HF_TOKEN": SECRET, "PYTHONPATH": "/extra/lib"}

# The shell's own command line (what any local user reads in /proc/PID/cmdline), a separator,
# then the variable as the command sees it; "cat" proves the command's stdin is still its own.
SHOW = 'tr "\\0" " " < /proc/$$/cmdline; printf "\\n--\\n%s\\n--\\n" "$HF_TOKEN"; cat'


async def _shown(transport: Transport) -> tuple[str, str, str]:
    done = await transport.run(SHOW, check=True, input=b"own input")
    cmdline, token, rest = done.stdout.split("\n--\n")
    return cmdline, token, rest


def test_host_env_reaches_a_local_command_but_not_its_command_line() -> None:
    host = HostSection(name="h", address="local", env=ENV)
    cmdline, token, rest = asyncio.run(_shown(LocalTransport(host)))
    assert token == SECRET
    assert "hf_s3cr3t" not in cmdline and "HF_TOKEN" in cmdline
    assert rest == "own input"


# Stands in for python: records the token it got and every ancestor's command line.
FAKE_PYTHON = """#!{python}
import json, os
lines, pid = [], os.getpid()
while pid > 1:
    with open(f"/proc/{{pid}}/cmdline", "rb") as f:
        lines.append(f.read().decode(errors="replace"))
    with open(f"/proc/{{pid}}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
with open("seen.json", "w") as out:
    json.dump({{"token": os.environ.get("HF_TOKEN"), "path": os.environ.get("PYTHONPATH"),
               "cmdlines": lines}}, out)
"""


def _launch(tmp_path: Path) -> tuple[ClusterConfig, LaunchPlan, HostPlan]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    host = HostSection(name="h", address="local", python=str(fake),
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1, env=ENV)
    config = ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="s", master=host.name, run_root=str(tmp_path / "runs")),
        hosts=(host,), run=RunSection(steps=3))
    run_id = "s-20261122-000000-abcdef"
    plan = LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id),
                      code_digest="d" * 64, master_addr="127.0.0.1", port=29999, nnodes=1,
                      user=None)
    place = HostPlan(host=host, node_rank=0, first_rank=0, nproc=1, device="cpu", gpus=0,
                     visible_devices=None, interface=None, local_addr="127.0.0.1")
    return config, plan, place


def test_launcher_gets_the_secret_but_no_ancestor_shows_it(tmp_path: Path) -> None:
    config, plan, place = _launch(tmp_path)
    assert "hf_s3cr3t" not in launcher_command(config, plan, place)  # what --dry-run prints
    asyncio.run(launch_local_until_exit(config, plan, place))
    seen = json.loads((Path(plan.run_dir) / "seen.json").read_text())
    assert seen["token"] == SECRET
    assert seen["path"] == f"{tmp_path}/work/code/{'d' * 64}:/extra/lib"
    assert not [c for c in seen["cmdlines"] if "hf_s3cr3t" in c]


def test_run_directory_and_files_are_private_on_the_host(tmp_path: Path) -> None:
    config, plan, place = _launch(tmp_path)
    asyncio.run(launch_local_until_exit(config, plan, place))
    run_dir = Path(plan.run_dir)
    paths = [run_dir, *run_dir.rglob("*")]
    assert len(paths) > 5
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_run_record_and_local_copy_are_private_on_the_master(tmp_path: Path) -> None:
    from remote.records.collected import CollectedCopy
    from remote.records.runs import RunInfo, local_run_dir, write_run_info

    config, plan, _ = _launch(tmp_path)
    write_run_info(config, RunInfo(run_id=plan.run_id, cluster="s", state="running",
                                   started=0.0, hosts=("h",)))
    local = local_run_dir(config, plan.run_id)
    copy = CollectedCopy(local, "h")
    copy.append("metrics/rank-0.jsonl", '{"kind": "step"}', 17)
    copy.save()
    copy.close()
    paths = [local, *local.rglob("*")]
    assert len(paths) > 3
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
