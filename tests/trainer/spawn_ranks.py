"""``python spawn_ranks.py N PYTHON-ARGS...``: N ranks of ``python PYTHON-ARGS`` on this machine,
started as torch's launcher starts its workers, without its agent process (a test helper).

Each rank gets the environment torchrun gives a worker of a one-node run (``RANK``,
``LOCAL_RANK``, ``GROUP_RANK``, ``ROLE_RANK``, the world sizes, ``MASTER_ADDR`` and a free
``MASTER_PORT``, where rank 0's ``init_process_group`` hosts the store) and writes to this
process's stdout and stderr, as under torchrun. When a rank fails, the others are stopped
(SIGTERM, then SIGKILL after a grace), as the agent stops a failed group; the exit status is the
first failed rank's, else 0. A SIGTERM or SIGINT to this process is passed on to the ranks.

torchrun's agent is a process that imports torch, hosts the rendezvous and polls its workers: a
second and a half of CPU for every launch, which proves nothing about what the trainer computes
(BENCHMARKS.md "Ranks without torchrun's agent, one run where three were random, and what pip's
bytecode costs"). The tests whose subject involves the agent (a stop that reaches the ranks
through it, core placement, a user's script under torchrun, and every run corral itself
launches) keep torchrun. Standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

GRACE_S = 10.0
"""How long the other ranks have to end after a rank failed, before SIGKILL."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for worker ``rank`` of a one-node run of ``world`` workers."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for more than one worker
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0", ROLE_RANK=str(rank),
               ROLE_NAME="default", WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               GROUP_WORLD_SIZE="1", ROLE_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), TORCHELASTIC_RESTART_COUNT="0",
               TORCHELASTIC_MAX_RESTARTS="0")
    return env


def stop(ranks: list[subprocess.Popen[bytes]], sig: int) -> None:
    for rank in ranks:
        if rank.poll() is None:
            rank.send_signal(sig)


def wait_all(ranks: list[subprocess.Popen[bytes]]) -> int:
    """Wait for every rank; the first failure's status (the others then stopped), else 0."""
    failed = 0
    deadline = None
    while any(rank.poll() is None for rank in ranks):
        if not failed:
            failed = next((rank.returncode for rank in ranks if rank.returncode), 0)
            if failed:
                stop(ranks, signal.SIGTERM)
                deadline = time.monotonic() + GRACE_S
        elif deadline is not None and time.monotonic() > deadline:
            stop(ranks, signal.SIGKILL)
            deadline = None
        time.sleep(0.05)  # polling the ranks' exit, as the agent does
    first = failed or next((rank.returncode for rank in ranks if rank.returncode), 0)
    return 1 if first < 0 else first


def main(argv: list[str]) -> int:
    world, args = int(argv[0]), argv[1:]
    port = free_port()
    ranks: list[subprocess.Popen[bytes]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop(ranks, signum))
    for rank in range(world):
        ranks.append(subprocess.Popen([sys.executable, *args],
                                      env=worker_env(rank, world, port)))
    return wait_all(ranks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
