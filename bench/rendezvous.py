"""torch's c10d rendezvous against its static one: several torchrun launchers on this machine
(one rank each, a script that only prints its start time), the two backends in alternating
rounds, medians.

corral launched with c10d until issue 58 and with static since (``remote.run.launch``). c10d's
nodes that are not the last to join re-read the rendezvous state after a fixed 1 s delay
(torch's ``dynamic_rendezvous.py``, ``_Action.SYNC``); static's master store waits for every
launcher's connection. Phases, from torchrun's own INFO lines (one clock: the launchers are
local): launchers up (start -> the last launcher logs ``Rendezvous'ing``: its interpreter and
torch's import), rendezvous (-> the last ``Rendezvous complete``), ranks up (-> the last rank's
first line).

    python bench/rendezvous.py --rounds 6 --nodes 3
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown_table, run_main
from script_overhead import torchrun_mark

SCRIPT = "import time\nprint(f'UP {time.time():.6f}', flush=True)\n"
BACKENDS = ("c10d", "static")
PHASES = ("launchers up", "rendezvous", "ranks up", "total")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher(backend: str, node: int, nodes: int, port: int, script: Path) -> list[str]:
    """One node's torchrun command line, as corral's launch gives it (but the backend)."""
    conf = f"is_host={str(node == 0).lower()},join_timeout=120" if backend == "c10d" \
        else "timeout=120"
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
            "--nproc-per-node", "1", "--node-rank", str(node), "--rdzv-backend", backend,
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"bench-{port}",
            "--rdzv-conf", conf, "--max-restarts", "0", str(script)]


def one(backend: str, nodes: int, script: Path) -> dict[str, float]:
    """Every launcher at once; the phases of this round."""
    port, env = _free_port(), dict(os.environ, LOGLEVEL="INFO", OMP_NUM_THREADS="1")
    t0 = time.time()
    procs = [subprocess.Popen(launcher(backend, n, nodes, port, script), env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True) for n in range(nodes)]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:  # each launcher leads its own group: nothing of a failed round stays
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    marks: dict[str, float] = {}
    for text in outputs:
        for line in text.splitlines():
            torchrun_mark(line, marks)
            if line.startswith("UP "):
                marks["up"] = max(marks.get("up", 0.0), float(line.split()[1]))
    if len(marks) != 3 or any(p.returncode for p in procs):
        raise RuntimeError(f"{backend}: a launcher failed:\n{outputs[-1][-2000:]}")
    joined, complete, up = marks["Rendezvous'ing"], marks["Rendezvous complete"], marks["up"]
    return dict(zip(PHASES, (joined - t0, complete - joined, up - complete, up - t0),
                    strict=True))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--nodes", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
    with tempfile.TemporaryDirectory(prefix="corral-rdzv-bench-") as tmp:
        script = Path(tmp) / "up.py"
        script.write_text(SCRIPT)
        for round_ in range(args.rounds):  # alternate who goes first
            for backend in BACKENDS if round_ % 2 == 0 else reversed(BACKENDS):
                runs[backend].append(one(backend, args.nodes, script))
                print(f"round {round_} {backend}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in runs[backend][-1].items()), flush=True)
    rows = [[phase, *(f"{statistics.median(r[phase] for r in runs[b]):.2f}" for b in BACKENDS)]
            for phase in PHASES]
    print(markdown_table(["phase (median s)", *BACKENDS], rows))
    return 0


if __name__ == "__main__":
    run_main(main)
