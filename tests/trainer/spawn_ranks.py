"""``python spawn_ranks.py [--preload M1,M2] N -m MODULE ARGS...`` (or ``... N SCRIPT ARGS...``): N
ranks of ``python -m MODULE ARGS`` on this machine, started with the environment torch's launcher
gives its workers, without its agent process (a test helper).

Each rank gets the environment torchrun gives a worker of a one-node run (``RANK``,
``LOCAL_RANK``, ``GROUP_RANK``, ``ROLE_RANK``, the world sizes, ``MASTER_ADDR`` and a free
``MASTER_PORT``, where rank 0's ``init_process_group`` hosts the store) and writes to this
process's stdout and stderr, as under torchrun. When a rank fails, the others are stopped
(SIGTERM, then SIGKILL after a grace), as the agent stops a failed group; the exit status is the
first failed rank's, else 0. A SIGTERM or SIGINT to this process is passed on to the ranks.

torchrun's agent is a process that imports torch, hosts the rendezvous and polls its workers: a
second and a half of CPU for every launch, which proves nothing about what the trainer computes
(docs/benchmarks/ci-time.md "Ranks without torchrun's agent, one run where three were random, and
what pip's
bytecode costs"). Nor does importing torch once per rank: this process imports it once, with
the environment the ranks share, and forks the ranks from there; each then takes its own
environment, signal handlers, ``sys.argv`` and ``sys.path[0]`` as ``python -m MODULE`` (or
``python SCRIPT``) would have them, runs the module as ``__main__`` and ends as that process
would (docs/benchmarks/ci-time.md "Ranks forked after one import of torch (issue 39)"). Nothing of
the
trainer is imported before the fork, so whatever it reads from its environment at import it
reads as a rank. ``torch._dynamo``, which torch imports when a rank makes its optimizer, is
imported here too, and so are the third-party libraries ``--preload`` names (the ``causal_lm``
task's transformers and peft, a script's own imports): 2.4 and ten seconds of CPU a rank on
the test machine (docs/benchmarks/ci-time.md "Libraries imported once for all ranks (issue 39)");
none of
them reads a rank's place in the world at import. The tests whose subject involves the agent
(a stop that reaches the ranks through it, core placement, a script run outside corral, and
every run corral itself launches) keep torchrun.
"""

from __future__ import annotations

import gc
import importlib
import os
import runpy
import signal
import socket
import sys
import time

ALWAYS_PRELOADED = ("torch._dynamo",)
"""Imported before the fork for every run: torch imports ``torch._dynamo`` when the first
optimizer is made (``Optimizer.__init__`` is wrapped by ``torch._disable_dynamo``), which every
rank does; 2.4 CPU-s a rank on the test machine."""

GRACE_S = 10.0
"""How long the other ranks have to end after a rank failed, before SIGKILL."""

PASSED_ON = {signal.SIGTERM, signal.SIGINT}
"""The signals this process passes on to the ranks."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_env() -> dict[str, str]:
    """What every rank's environment holds besides its place in the world: this process's, with
    torchrun's default of one OpenMP thread for more than one worker."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for worker ``rank`` of a one-node run of ``world`` workers."""
    env = shared_env()
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0", ROLE_RANK=str(rank),
               ROLE_NAME="default", WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               GROUP_WORLD_SIZE="1", ROLE_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), TORCHELASTIC_RESTART_COUNT="0",
               TORCHELASTIC_MAX_RESTARTS="0")
    return env


class Rank:
    """A forked rank: as much of ``subprocess.Popen`` as waiting on it and stopping it need."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Its exit status once it has ended (minus the signal's number if one ended it)."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def become_rank(env: dict[str, str], args: list[str]) -> None:
    """In the forked child: take the rank's environment and Python's default signal handling,
    then run ``args`` as ``python ARGS`` would; its end (a ``SystemExit``, an exception) leaves
    through the interpreter's own exit, as that process's would."""
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
    sys.exit(0)


def stop(ranks: list[Rank], sig: int) -> None:
    for rank in ranks:
        if rank.poll() is None:
            rank.send_signal(sig)


def wait_all(ranks: list[Rank]) -> int:
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


def import_before_fork(preload: list[str]) -> None:
    """torch, imported with the environment the ranks share (OpenMP reads its thread count when
    it loads), then ``ALWAYS_PRELOADED`` and ``preload``; the forks share their pages."""
    os.environ.update(shared_env())
    # With the collector paused, then what was imported frozen, as the trainer's entry points
    # import (trainer.gc_pause, not imported here: nothing of the trainer is, before a fork);
    # the forks' reference counting then copies fewer of those pages too.
    gc.disable()
    import torch
    imported = (*ALWAYS_PRELOADED, *preload)
    for name in imported:
        importlib.import_module(name)
    gc.freeze()
    gc.enable()
    if torch.cuda.is_initialized():  # a rank could not use it: CUDA does not survive a fork
        sys.exit(f"spawn_ranks.py: importing {', '.join(imported)} initialised CUDA")


def main(argv: list[str]) -> int:
    preload: list[str] = []
    if argv[:1] == ["--preload"]:
        preload, argv = argv[1].split(","), argv[2:]
    world, args = int(argv[0]), argv[1:]
    if not args or (args[0] == "-m" and len(args) < 2) or (args[0].startswith("-") and
                                                          args[0] != "-m"):
        sys.exit("spawn_ranks.py: give [--preload M1,M2] N, then -m MODULE ARGS or SCRIPT ARGS")
    port = free_port()
    ranks: list[Rank] = []
    for sig in PASSED_ON:
        signal.signal(sig, lambda signum, _frame: stop(ranks, signum))
    import_before_fork(preload)
    for rank in range(world):
        env = worker_env(rank, world, port)
        sys.stdout.flush()
        sys.stderr.flush()
        # Held from the fork until the rank has its own handlers: a signal in between would
        # run this process's handler in the rank.
        signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
        pid = os.fork()
        if pid == 0:  # the rank: it never comes back here (become_rank ends in SystemExit)
            become_rank(env, args)
        ranks.append(Rank(pid))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
    return wait_all(ranks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
