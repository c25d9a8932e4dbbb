"""Mixed clusters, right by default, on hosts in network namespaces (over SSH).

- corral setup on a host that has only Python: the bare host fails the check, setup makes it
  ready (the user's lines, then torch), a second setup changes nothing, and the run trains on it.
- Host order: cluster.toml lists n2, n1 with n1 the master, while torch's static rendezvous
  numbers the master's node 0 (n1, n2). The split, given in host order, must still land on the
  hosts it names, and the checkpoints where a resume looks (rank 0 on n2, not on the master).
One cluster proves both: its first run is the set-up host's run and the ordered run at once (a
module fixture makes it), so only the resume launches again. Two hosts: the order is the point,
and every host costs each launch a launcher and a rank.
Skips unless running as root with ``ip netns``, sshd and ssh-keygen.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

ORDER = ("n2", "n1")
"""cluster.toml's host order; torch orders the nodes n1 (the master), n2."""
MASTER = "n1"
SLOWDOWN = {"n2": 1.0, "n1": 1.25}
"""Each host's own slowdown: a rank's start event names the host whose command started it."""
SPLIT = (16, 8)
BARE_HOST = ('env = { PATH = "/usr/bin:/bin:/usr/sbin:/sbin", '
             'PIP_INDEX_URL = "file:///opt/pypi/simple" }\ntorch_index = ""\n')
"""A host whose ``python3`` is the system's bare interpreter (no torch). The namespaces reach no
index on the network: pip uses the machine's local index and wheels (its /etc/pip.conf), not
PyTorch's index."""


corral = netns.corral


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted((run_dir / "metrics").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == kind:
                found.append(event)
    return found


def _write(box: netns.NetnsCluster, steps: int, failing: str = "") -> None:
    """n1 with corral's interpreter; n2 with none named (python3 on its PATH has no torch) and
    setup lines: one that leaves a marker, then ``failing`` where given."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs the system's /usr/bin/python3 as the bare interpreter")
    marker = box.root / "n2 prepared"
    setup = (f'setup = ["echo prepared \\"$(hostname)\\" > \'{marker}\'"'
             + (f', "{failing}"' if failing else "") + "]\n")
    run = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\n'
           f'global_batch = 24\nsteps = {steps}\npolicy = "static"\ncheckpoint_every = 3\n'
           f"split = [{', '.join(map(str, SPLIT))}]\n")
    lines = {"n1": f'python = "{sys.executable}"\n', "n2": BARE_HOST + setup}
    box.write_cluster_toml(None, run=run, order=ORDER, master=MASTER, host_lines={
        n: lines[n] + f"slowdown = {s}\n" for n, s in SLOWDOWN.items()})


@dataclass(frozen=True)
class FirstRun:
    """What the module's fixture did on the fresh cluster, in order."""

    check: subprocess.CompletedProcess[str]
    """``corral check`` before any setup (the bare host fails it)."""
    setup: subprocess.CompletedProcess[str]
    """``corral setup n2``."""
    again: subprocess.CompletedProcess[str]
    """``corral setup`` of every host, a second time."""
    run: subprocess.CompletedProcess[str]
    """``corral run`` of 6 steps."""
    run_dirs: list[Path]
    """The run directories the run left (one)."""
    processes_left: dict[str, list[int]]
    """What the run left running on the hosts (``box.processes_left()``)."""


@pytest.fixture(scope="module")
def first(box: netns.NetnsCluster) -> FirstRun:
    """The bare host checked, set up, set up again, then the cluster's first run (6 steps)."""
    _write(box, steps=6)
    check = corral(box, "check", timeout=300)
    setup = corral(box, "setup", "n2", timeout=1200)
    again = corral(box, "setup", timeout=600)  # every host
    run = corral(box, "run", timeout=600)
    run_dirs = [p for p in (box.root / "runs").iterdir() if (p / "run.json").is_file()]
    return FirstRun(check, setup, again, run, run_dirs, box.processes_left())


def test_setup_makes_a_bare_host_ready_to_run_and_a_second_setup_changes_nothing(
    box: netns.NetnsCluster, first: FirstRun,
) -> None:
    work = box.root / "work-n2"
    # The premise: the bare host fails the check for want of torch.
    check = first.check
    assert check.returncode == 1 and "torch" in check.stdout and "corral setup n2" in check.stdout

    done = first.setup
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "n2: $ echo prepared" in output  # the user's line, shown before it ran
    assert (box.root / "n2 prepared").read_text().startswith("prepared")
    assert "n2: $ pip install torch==" in output and "+cpu" in output
    assert "n2: ok torch 2.13.0+cpu (CPU build)" in output
    assert (work / "setup.log").read_text().count("$ ") >= 3  # every step logged on the host
    assert (work / "venv" / "bin" / "python").exists()

    again = first.again  # none has anything to change
    assert again.returncode == 0, again.stdout + again.stderr
    assert "n2: ok nothing to change" in again.stdout
    assert "n1: ok nothing to change: it runs python = " in again.stdout  # the user's python
    assert "nothing to change: every host was set up already" in again.stdout
    assert "$ " not in again.stdout  # no step ran

    run = first.run
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "completed" in run.stdout
    # n2's ranks ran in the environment setup made.
    assert first.processes_left == {}


def test_the_split_lands_on_the_named_hosts_whatever_torchs_node_order(
    box: netns.NetnsCluster, first: FirstRun,
) -> None:
    done = first.run
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert len(first.run_dirs) == 1
    run_dir = first.run_dirs[0]

    # The premise: torch numbered the nodes differently from cluster.toml (n2 second, not first).
    torch_ranks = {}
    for name in ORDER:
        log = (run_dir / "logs" / name / "launcher.log").read_text()
        torch_ranks[name] = re.search(r"global_ranks=\[([\d, ]*)\]", log).group(1)  # type: ignore[union-attr]
    assert torch_ranks == {"n1": "0", "n2": "1"}

    # Each rank's start event: the host that started it (its slowdown) and its share.
    host_of_slowdown = {s: n for n, s in SLOWDOWN.items()}
    starts = {e["rank"]: e for e in _events(run_dir, "start")}
    assert sorted(starts) == [0, 1]
    landed = {host_of_slowdown[e["slowdown"]]: e["split"][e["rank"]] for e in starts.values()}
    assert landed == dict(zip(ORDER, SPLIT, strict=True))
    steps = _events(run_dir, "step")
    for event in steps:
        assert event["local_batch"] == SPLIT[event["rank"]]

    # Rank 0 runs on the first host (not the master) and writes the checkpoints.
    assert host_of_slowdown[starts[0]["slowdown"]] == "n2"
    checkpoints = [e for e in _events(run_dir, "checkpoint")]
    assert [e["step"] for e in checkpoints] == [3, 6] and {e["rank"] for e in checkpoints} == {0}
    assert all(Path(e["path"]).is_file() for e in checkpoints)
    assert first.processes_left == {}

    # A resume (with more steps) finds them: it continues from step 6, split unchanged.
    _write(box, steps=9)
    done = corral(box, "run", "--resume", timeout=420)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    resumed = [e for e in _events(run_dir, "start") if e["resumed_from"]]
    assert len(resumed) == len(ORDER)
    assert {e["resumed_from"] for e in resumed} == {checkpoints[-1]["path"]}
    assert {e["step"] for e in resumed} == {6}
    ends = {(e["rank"], e["status"], e["step"]) for e in _events(run_dir, "end")}
    assert {(r, "completed", 9) for r in range(len(ORDER))} <= ends
    status = corral(box, "status", timeout=120)
    assert run_dir.name in status.stdout and "completed" in status.stdout
    assert box.processes_left() == {}


def test_a_failing_setup_line_is_named_with_its_host_and_number(
    box: netns.NetnsCluster,
) -> None:
    _write(box, steps=9, failing="exit 3")
    (box.root / "work-n2" / "venv" / "corral-setup.json").unlink(missing_ok=True)
    done = corral(box, "setup", "n2", timeout=600)
    assert done.returncode == 1
    assert "n2: FAILED setup line 2 ('exit 3') exited with status 3" in done.stdout
    assert "Traceback" not in done.stderr
