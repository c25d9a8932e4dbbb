"""Helpers for tests that launch real trainer ranks with torch's launcher (gloo, CPU)."""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import launch_count
import tiers
import torch
import torch.multiprocessing
from warm_spawner import run_warm

from trainer.integrations.user_modules import CORRAL_PACKAGES, HELPERS
from trainer.run_layout import CHECKPOINT_NAME, RunLayout
from trainer.settings.train_config import TASK_PACKAGES, requirement_name

REPO = Path(__file__).resolve().parents[2]


LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
              "LOCAL_WORLD_SIZE", "GROUP_RANK")
"""What a launcher tells its ranks: never inherited from the test process (a test that joined a
process group in it leaves MASTER_ADDR and MASTER_PORT there, with its store on that port)."""


def rank_env() -> dict[str, str]:
    """One thread per rank: the test machine is small and shared."""
    env = {name: value for name, value in os.environ.items() if name not in LAUNCH_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("CORRAL_SLOWDOWN", None)
    # No stored profiles unless a test provides some: capacities come from the warm-up.
    env["CORRAL_PROFILE_DIR"] = str(Path(tempfile.gettempdir()) / "corral-tests-no-profiles")
    return env


def trainer_args(*flags: str, threads: int | None = 1) -> list[str]:
    """``-m trainer`` with ``flags``, and ``threads`` per rank: one (the test machine is small
    and shared), or None for the trainer's own default, a thread per core: a serial test's
    one-process reference, which has the machine to itself (on two cores its parameters were
    those of one thread to the bit, in less time: docs/benchmarks/ci-time.md "Compiled once,
    references on
    every core")."""
    per_rank = [] if threads is None else ["--threads", str(threads)]
    return ["-m", "trainer", *per_rank, "--resources-every", "0", *flags]


SPAWN_RANKS = Path(__file__).with_name("spawn_ranks.py")
"""Starts several ranks as torchrun starts its workers, without its agent process (the agent
costs a second and a half of CPU a launch and proves nothing about what the ranks compute)."""


def task_libraries(flags: tuple[str, ...]) -> list[str]:
    """The modules of the packages the run's ``--task`` needs beyond corral's own (the
    ``causal_lm`` task's transformers and peft: ``TASK_PACKAGES``), which ``SPAWN_RANKS`` imports
    once for all ranks."""
    task = flags[flags.index("--task") + 1] if "--task" in flags[:-1] else ""
    return [requirement_name(req) for req in TASK_PACKAGES.get(task, ())]


def script_libraries(script: Path) -> list[str]:
    """The modules ``script`` imports at its top level that are neither Python's own, torch
    (``SPAWN_RANKS`` imports it anyway) nor corral's, which ``SPAWN_RANKS`` imports once for
    all ranks."""
    own = {"__future__", "torch", *CORRAL_PACKAGES, HELPERS}
    modules: list[str] = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return [m for m in modules
            if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in own]


def spawn_cmd(nproc: int, libraries: list[str]) -> list[str]:
    """``SPAWN_RANKS`` for ``nproc`` ranks, importing ``libraries`` once before the fork; the
    command to run (``-m MODULE ARGS`` or ``SCRIPT ARGS``) follows."""
    preload = ["--preload", ",".join(libraries)] if libraries else []
    return [sys.executable, str(SPAWN_RANKS), *preload, str(nproc)]


def launch_cmd(nproc: int, *flags: str, threads: int | None = 1, agent: bool = True
               ) -> list[str]:
    """``nproc`` trainer ranks: under ``python -m torch.distributed.run --standalone`` (a free
    port) for a test whose subject involves torch's launcher (a stop that reaches the ranks
    through it, as the remote layer's does), else (``agent=False``) through ``SPAWN_RANKS``.
    One rank is a lone ``python -m trainer``, which the trainer runs as rank 0 of 1 on a free
    port (``trainer.dist``)."""
    trainer = trainer_args(*flags, threads=threads)
    if nproc == 1:
        return [sys.executable, *trainer]
    if not agent:
        return [*spawn_cmd(nproc, task_libraries(flags)), *trainer]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", *trainer]


def warm_launch(cmd: list[str]) -> tuple[list[str], list[str]] | None:
    """What the warm spawner runs for ``cmd`` (its arguments, and the libraries it imports
    before the fork), if ``cmd`` is ``SPAWN_RANKS`` or a lone ``python -m trainer``."""
    if cmd[:2] == [sys.executable, str(SPAWN_RANKS)]:
        argv = cmd[2:]
        return argv, argv[1].split(",") if argv[:1] == ["--preload"] else []
    if cmd[:3] == [sys.executable, "-m", "trainer"]:
        return cmd[1:], task_libraries(tuple(cmd))
    return None


def run_launcher(cmd: list[str], *, env: dict[str, str], timeout: float, warm: bool = True
                 ) -> subprocess.CompletedProcess[str]:
    """``cmd`` (torch's launcher, ``SPAWN_RANKS`` or a lone rank) to its end. Past ``timeout``
    its whole process group is killed, ranks included, before ``TimeoutExpired`` is raised:
    killing the launcher alone would leave its ranks running after the test. In a slow test,
    ``SPAWN_RANKS`` and a lone rank start from the test worker's warm spawner
    (``warm_spawner.py``) unless ``warm`` is off; a fast test starts them as processes, which
    its guard sees."""
    forked = warm_launch(cmd) if warm and not tiers.in_fast_test else None
    if forked is not None:
        return run_warm(*forked, cwd=REPO, env=env, timeout=timeout)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def launch(nproc: int, *flags: str, timeout: float = 240, threads: int | None = 1,
           warm: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the trainer on ``nproc`` local ranks (``threads`` each: ``trainer_args``) to their
    end, without torch's agent (``SPAWN_RANKS``; from the warm spawner unless ``warm`` is off:
    ``run_launcher``)."""
    return run_launcher(launch_cmd(nproc, *flags, threads=threads, agent=False), env=rank_env(),
                        timeout=timeout, warm=warm)


FORK_SERVER_IMPORTS = ["torch", "pytest"]
"""What this test worker's fork server imports once, before it forks any rank."""


def start_group(rank_fn: Callable[..., None], args: tuple[Any, ...], nprocs: int) -> None:
    """``rank_fn(rank, *args)`` on ``nprocs`` processes, joined, as ``torch.multiprocessing.spawn``
    runs it, but forked from this test worker's fork server: it imports torch once, where each
    spawned process imported it again (3-5 CPU-s a rank on the test machine). As when spawned,
    each rank gets ``rank_fn`` and ``args`` pickled, and this process's directory; its
    environment is the fork server's (this worker's when the server started). What the ranks
    printed is printed here, in rank order, as a spawned rank's output was."""
    launch_count.note("process group")
    multiprocessing.set_forkserver_preload(FORK_SERVER_IMPORTS)
    with tempfile.TemporaryDirectory() as folder:
        outputs = [Path(folder) / f"rank-{rank}.out" for rank in range(nprocs)]
        try:
            torch.multiprocessing.start_processes(
                _printing_to, args=(folder, rank_fn, *args), nprocs=nprocs, join=True,
                start_method="forkserver")
        finally:
            printed = [path.read_text() for path in outputs if path.exists()]
            print("".join(printed), end="", flush=True)


def _printing_to(rank: int, folder: str, rank_fn: Callable[..., None], *args: Any) -> None:
    """In a rank of ``start_group``: its output into its file in ``folder``, then ``rank_fn``."""
    with open(Path(folder) / f"rank-{rank}.out", "w") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
    rank_fn(rank, *args)


def events(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    """Every event rank ``rank`` wrote, decoded."""
    path = run_dir / "metrics" / f"rank-{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of_kind(evts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evts if e["event"] == kind]


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    """Model parameters in the newest checkpoint of ``run_dir``."""
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(newest, map_location="cpu", weights_only=False)
    return dict(state["model"])


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest per-tensor ``max|a-b| / max|a|`` over all tensors."""
    assert a.keys() == b.keys()
    return max(
        ((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12))
        .item()
        for k in a
    )


def check(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the launcher's output when a run did not exit 0."""
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"rc={proc.returncode}\n{output}"


def trainer_main(argv: list[str], monkeypatch: Any) -> int:
    """``python -m trainer ARGV``'s exit code, in this process, for flags refused before the
    rank does anything (argparse and the config checks); training here would be a bug."""
    import trainer.__main__
    import trainer.train

    def started(config: object) -> int:
        raise AssertionError(f"the flags were accepted and training started: {argv}")

    monkeypatch.setattr(trainer.train, "train", started)
    try:
        return trainer.__main__.main(argv)
    except SystemExit as exited:  # argparse's own usage error
        return int(exited.code or 0)


def cut_back_to(run_dir: Path, step: int) -> None:
    """``run_dir`` as if its run had died after step ``step``'s checkpoint: every later
    checkpoint (with the files beside it) and the final model gone."""
    checkpoints = run_dir / RunLayout.CHECKPOINTS
    for path in list(checkpoints.iterdir()):
        found = CHECKPOINT_NAME.match(path.name)
        if found and int(found[1]) > step:
            for beside in checkpoints.glob(f"{path.name}*"):  # the checkpoint, what is beside it
                beside.unlink()
    shutil.rmtree(run_dir / RunLayout.FINAL, ignore_errors=True)
