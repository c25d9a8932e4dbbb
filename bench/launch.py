"""Launch latency of ``corral run`` over real sshd: start -> first step event, by phase.

Three OpenSSH sshd daemons on loopback ports play three hosts (one CPU rank each, the same
interpreter). The run is started twice through the run API, as ``corral run`` does: with a fresh
workdir (the code is pushed) and again with the tree unchanged (the push is skipped). Phases are
the times at which the follower sees each event:

- connect: SSH connections to every host (opened before ``start``, reused by every phase)
- check: the pre-flight check (``RunStatus checking`` -> ``pushing``)
- push: code push (``pushing`` -> ``launching``)
- launch: port, interface and launcher start on every host (``launching`` -> ``running``)
- rendezvous+start: ``running`` -> every rank's ``start`` event, or the first ``step`` if it
  comes first (torchrun and the ranks import python+torch here, then meet at the rendezvous)
- first step: from there -> first ``step`` event (model, data, first optimizer step)

The hosts' python+torch import is measured on its own, under the same contention (all hosts at
once): ``import torch.distributed.run`` (the launcher) then ``import trainer.train`` (a rank),
which is what the launch path does one after the other. corral's own share = start -> first
step minus that import time; the target is <= 1.5 s.

    python bench/launch.py [--hosts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remote.api import LogLine, RankEvent, RunStatus  # noqa: E402
from remote.config import ClusterConfig, ClusterSection, HostSection, RunSection, SshSection  # noqa: E402
from remote.controller import SshRunController  # noqa: E402
from remote.pool import HostPool  # noqa: E402
from remote.push import build_bundle, code_dir, push_code  # noqa: E402
from remote.transport import Transport, shell_path  # noqa: E402
from tests.remote.conftest import (  # noqa: E402
    SSHD,
    _keygen,
    _sshd_config,
    _wait_for_banner,
    free_port,
)
from trainer.events import StartEvent, StepEvent  # noqa: E402

TARGET_S = 1.5
PHASES = ("connect", "check", "push", "launch", "rendezvous+start", "first step")


def start_daemons(root: Path, count: int) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """``count`` sshd daemons on loopback trusting ``root/client_key``; known_hosts written."""
    _keygen(root / "client_key")
    authorized = root / "authorized_keys"
    authorized.write_text((root / "client_key.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    known: list[str] = []
    for _ in range(count):
        port = free_port()
        host_key = root / f"host_key.{port}"
        _keygen(host_key)
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f",
                                 str(_sshd_config(root, port, host_key, authorized))],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        _wait_for_banner(port, proc, time.monotonic() + 15.0)
        key_type, key_data = Path(f"{host_key}.pub").read_text().split()[:2]
        known.append(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
        ports.append(port)
    (root / "known_hosts").write_text("".join(known))
    (root / "ssh_config").write_text("")
    return procs, ports


def cluster(root: Path, ports: list[int]) -> ClusterConfig:
    hosts = tuple(
        HostSection(name=f"h{i}", address="127.0.0.1", port=port, user="root",
                    identity_file=str(root / "client_key"), python=sys.executable,
                    workdir=str(root / "work" / f"h{i}"), gpus=0, nproc=1, threads=1)
        for i, port in enumerate(ports))
    return ClusterConfig(
        path=root / "cluster.toml",
        cluster=ClusterSection(name="bench", master="h0", run_root=str(root / "runs")),
        hosts=hosts,
        run=RunSection(samples=64, global_batch=12, steps=2, checkpoint_every=0,
                       policy="static"),
        ssh=SshSection(connect_timeout=10.0, known_hosts_file=str(root / "known_hosts"),
                       config_file=str(root / "ssh_config")),
    )


async def one_launch(config: ClusterConfig) -> tuple[dict[str, float], str]:
    """Phase durations of one start -> first step, the run then followed to its end."""
    controller = SshRunController(config)
    marks: dict[str, float] = {}
    starts: set[int] = set()
    sent = "?"
    world = len(config.hosts)
    t0 = time.perf_counter()
    try:
        await controller.pool.gather(lambda t: t.run("true", check=True))
        marks["connected"] = time.perf_counter()
        handle = await controller.start()
        async for event in handle.events():
            now = time.perf_counter()
            if isinstance(event, RunStatus):
                marks.setdefault(event.state, now)
                if event.state in ("failed", "stopped"):
                    raise SystemExit(f"run {event.state}: {event.detail}")
            elif isinstance(event, LogLine) and event.text.startswith("code "):
                sent = event.text.split("sent to ", 1)[-1].split(" (", 1)[0]
            elif isinstance(event, RankEvent) and isinstance(event.event, StartEvent):
                starts.add(event.event.rank)
                if len(starts) == world:
                    marks.setdefault("started", now)
            elif isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                marks.setdefault("step", now)
                # A fast host's step can arrive before a slow host's start event.
                marks.setdefault("started", now)
    finally:
        await controller.aclose()
    order = ["connected", "checking", "pushing", "launching", "running", "started", "step"]
    edges = [t0, marks["connected"], marks["pushing"], marks["launching"], marks["running"],
             marks["started"], marks["step"]]
    assert all(name in marks for name in order), marks
    phases = {name: b - a for name, a, b in zip(PHASES, edges, edges[1:], strict=False)}
    phases["total"] = marks["step"] - t0
    return phases, sent


async def import_time(config: ClusterConfig) -> float:
    """The launcher's then a rank's import, on every host at once (seconds, wall)."""
    bundle = build_bundle()
    pool = HostPool(config)

    async def timed(transport: Transport, code: str, cwd: str | None) -> float:
        prefix = f"cd {cwd} && PYTHONPATH=\"$PWD\" " if cwd else ""
        command = (f"s=$(date +%s%N); {prefix}{shlex.quote(sys.executable)} -c "
                   f"{shlex.quote(code)} && e=$(date +%s%N) && echo $((e - s))")
        done = await transport.run(command, check=True, timeout=120.0)
        return int(done.stdout.split()[-1]) / 1e9

    # The tree as it is now (a file may have changed since the runs): present on every host.
    await pool.gather(lambda t: push_code(t, bundle))

    try:
        agent = await pool.gather(lambda t: timed(t, "import torch.distributed.run", None))
        rank = await pool.gather(lambda t: timed(
            t, "import trainer.train", shell_path(code_dir(t.host.workdir, bundle.digest))))
    finally:
        await pool.aclose()
    values = [*agent.values(), *rank.values()]
    if any(isinstance(v, BaseException) for v in values):
        raise SystemExit(f"import timing failed: {values}")
    return max(v for v in agent.values() if isinstance(v, float)) + max(
        v for v in rank.values() if isinstance(v, float))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3, help="sshd hosts (default: 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        procs, ports = start_daemons(root, args.hosts)
        try:
            config = cluster(root, ports)
            fresh, fresh_sent = asyncio.run(one_launch(config))
            unchanged, unchanged_sent = asyncio.run(one_launch(config))
            imports = asyncio.run(import_time(config))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)
    print(f"## corral run launch latency: {args.hosts} sshd hosts on loopback, 1 CPU rank each\n")
    print("| phase | fresh push (s) | unchanged tree (s) |")
    print("|---|---:|---:|")
    for name in (*PHASES, "total"):
        print(f"| {name} | {fresh[name]:.2f} | {unchanged[name]:.2f} |")
    print(f"| code sent to | {fresh_sent} | {unchanged_sent} |")
    print(f"| hosts' python+torch import (launcher, then rank) | {imports:.2f} | {imports:.2f} |")
    shares = [fresh["total"] - imports, unchanged["total"] - imports]
    print(f"| **corral's own share** (total - import) | {shares[0]:.2f} | {shares[1]:.2f} |")
    verdict = "met" if shares[1] <= TARGET_S else "NOT met"
    print(f"\ntarget: corral's own share <= {TARGET_S} s with an unchanged tree: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
