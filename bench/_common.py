"""Shared helpers for the balancing benchmarks: launch the real trainer, read its events.

Every run goes through torch's launcher exactly as users start it (``python -m
torch.distributed.run --standalone --nproc-per-node N -m trainer ...``), one CPU thread per rank,
with the allocator environment ``corral run`` would give this machine (``corral_env``), in its
own process group so that a timeout or Ctrl-C ends the whole run and nothing is left
behind. Throughput is the global batch / rank 0's ``step_s`` of its ``step`` events.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer.event_log import events_path
from trainer.events import RebalanceEvent, StartEvent, StepEvent, parse_event
from trainer.placement import allocator_env, choose_allocator, find_allocators

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunResult:
    """What one trainer run left in its rank-0 events file."""

    label: str
    run_dir: Path
    start: StartEvent
    steps: list[StepEvent] = field(default_factory=list)
    rebalances: list[RebalanceEvent] = field(default_factory=list)
    wall_s: float = 0.0

    def throughput(self, skip: int, last: int | None = None) -> float:
        """Median cluster samples/s over steps ``skip+1 .. last`` (warm-up steps skipped)."""
        values = [
            rate
            for s, rate in zip(self.steps, self.step_rates(), strict=True)
            if s.step > skip and (last is None or s.step <= last) and rate
        ]
        if not values:
            raise RuntimeError(f"{self.label}: no steps after the first {skip}")
        return statistics.median(values)

    def step_rates(self) -> list[float]:
        """The cluster's samples/s of each of rank 0's steps (global batch / step time)."""
        return [self.start.global_batch / s.step_s if s.step_s > 0 else 0.0
                for s in self.steps]

    def compute_spread(self, skip: int) -> float:
        """Slowest / fastest rank's median ``compute_s`` over the steps after ``skip`` (1.00:
        the split balances compute), from every rank's events file (one run per directory).
        Medians per rank first, so per-step noise does not read as imbalance."""
        medians = []
        for rank in range(self.start.world_size):
            with open(events_path(self.run_dir, rank), encoding="utf-8") as f:
                times = [
                    e.compute_s
                    for e in map(parse_event, f)
                    if isinstance(e, StepEvent) and e.step > skip
                ]
            medians.append(statistics.median(times) if times else 0.0)
        return max(medians) / min(medians) if min(medians) > 0 else float("nan")

    @property
    def final_split(self) -> tuple[int, ...]:
        return self.rebalances[-1].split if self.rebalances else self.start.split


def corral_env() -> dict[str, str]:
    """The allocator environment ``corral run`` gives a CPU host like this one (tcmalloc or
    jemalloc preloaded when present, else tuned glibc): benchmarks measure the product."""
    found = find_allocators()
    return allocator_env(choose_allocator("auto", found), found)


def tiny_lm_files(folder: Path) -> tuple[Path, Path]:
    """Where ``causal_lm_task`` keeps the tiny model and its corpus under ``folder``."""
    return folder / "tiny-lm", folder / "corpus.txt"


def bare_env(threads: int) -> dict[str, str]:
    """The environment of a run compared with a plain loop (bench/overhead.py, bench/llm.py):
    this checkout on the path, ``threads`` OpenMP threads, no injected slowdown, and no
    allocator of ``corral_env`` (the plain loop has none either)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    env.pop("CORRAL_SLOWDOWN", None)
    return env


def rounds_parser(doc: str | None) -> argparse.ArgumentParser:
    """The start of a corral-against-a-plain-loop benchmark's parser: ``--rounds``,
    ``--nproc`` and ``--threads``, with ``doc`` as its description."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    return p


def causal_lm_task(folder: Path, *, seq_len: int = 128, lora_r: int = 16) -> list[str]:
    """Trainer flags that train the ``causal_lm`` task (LoRA, AdamW) instead of an image model:
    the tiny generated model and corpus of ``python -m trainer.tiny_lm`` (written into
    ``folder`` unless already there; needs transformers + peft, nothing is downloaded). The
    global batch then counts sequences of ``seq_len`` tokens (as in bench/llm.py)."""
    model, data = tiny_lm_files(folder)
    if not (model / "config.json").is_file() or not data.is_file():
        from trainer.tiny_lm import write_corpus, write_tiny_lm

        write_tiny_lm(model)
        write_corpus(data, documents=600)
    options = [f"model={model}", f"data={data}", f"seq_len={seq_len}", f"lora_r={lora_r}",
               f"lora_alpha={2 * lora_r}"]
    flags = ["--task", "causal_lm", "--optimizer", "adamw", "--lr", "0.001"]
    for option in options:
        flags += ["--task-option", option]
    return flags


def trainer_flags(*, global_batch: int, steps: int, run_dir: Path, policy: str = "static",
                  slowdown: Sequence[float] | None = None, threads: int | None = 1,
                  model: str = "simple_cnn", task: Sequence[str] = ()) -> list[str]:
    """``-m trainer`` flags for ``steps`` steps of ``model`` on synthetic data, or of the task
    that ``task`` flags choose (e.g. ``causal_lm_task``)."""
    what = list(task) or ["--model", model, "--dataset", "synthetic_image",
                          "--samples", str(max(4096, 4 * global_batch))]
    flags = [
        "-m", "trainer", *what, "--global-batch", str(global_batch),
        "--policy", policy, "--steps", str(steps), "--run-dir", str(run_dir),
        "--resources-every", "0",
    ]  # fmt: skip
    if threads is not None:
        flags += ["--threads", str(threads)]
    if slowdown is not None:
        flags += ["--slowdown", ",".join(f"{s:g}" for s in slowdown)]
    return flags


def launcher(nproc: int) -> list[str]:
    """torch's launcher on this machine for ``nproc`` ranks: the start of a run's command."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}"]


def run_trainer(
    label: str,
    run_dir: Path,
    *,
    nproc: int,
    global_batch: int,
    steps: int,
    policy: str = "static",
    slowdown: Sequence[float] | None = None,
    extra: Sequence[str] = (),
    task: Sequence[str] = (),
    timeout_s: float = 900,
    tree: Path = REPO,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Train ``steps`` steps of simple_cnn on synthetic data (or of the task ``task`` flags
    choose, see ``trainer_flags``); return rank 0's events.

    ``tree`` is the checkout whose trainer runs (another one for before/after comparisons);
    ``env`` is added to the environment (default: ``corral_env()``, as ``corral run`` does).
    Raises ``RuntimeError`` with the tail of the output when the run fails or times out.
    """
    cmd = [*launcher(nproc),
           *trainer_flags(global_batch=global_batch, steps=steps, run_dir=run_dir,
                          policy=policy, slowdown=slowdown, task=task), *extra]
    print(f"  {label}: {nproc} rank(s), B={global_batch}, {steps} steps ...", flush=True)
    return run_command(label, cmd, run_dir, env=corral_env() if env is None else env,
                       timeout_s=timeout_s, tree=tree)


def run_command(label: str, cmd: Sequence[str], run_dir: Path, *,
                env: Mapping[str, str], timeout_s: float = 900, tree: Path = REPO,
                threads: int = 1) -> RunResult:
    """Run a trainer command line in its own process group; return rank 0's events."""
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree),
                                                           os.environ.get("PYTHONPATH")]))
    began = time.perf_counter()
    # Own session: the launcher and its ranks form one process group we can end together.
    proc = subprocess.Popen(
        list(cmd), cwd=tree, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except BaseException:
        _end_group(proc)
        raise
    finally:
        if proc.poll() is None:
            _end_group(proc)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{label}: trainer exited with {proc.returncode}\n{tail}")
    result = read_run(label, run_dir)
    result.wall_s = wall
    return result


def run_together(runs: Sequence[tuple[str, Sequence[str], Path]], *, env: Mapping[str, str],
                 timeout_s: float = 900, threads: int = 1) -> list[RunResult]:
    """Start every ``(label, command, run_dir)`` at once, each in its own process group, and
    wait for all: runs that share the machine but exchange nothing (bench/solo_sum.py's
    concurrent solo). A failure or timeout ends every group started here and raises
    ``RuntimeError`` naming the run."""
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")]))}
    procs: list[subprocess.Popen[str]] = []
    try:
        for _label, cmd, run_dir in runs:
            run_dir.mkdir(parents=True, exist_ok=True)
            # A file, not a pipe: a run waited on later must not block on a full pipe.
            with open(run_dir / "output.log", "w", encoding="utf-8") as out:
                procs.append(subprocess.Popen(
                    list(cmd), cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                    text=True, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        for (label, _cmd, run_dir), proc in zip(runs, procs, strict=True):
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                lines = (run_dir / "output.log").read_text(encoding="utf-8").splitlines()
                tail = "\n".join(lines[-20:])
                raise RuntimeError(f"{label}: trainer exited with {proc.returncode}\n{tail}")
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"runs started together: not done after {timeout_s:g} s") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                _end_group(proc)
    return [read_run(label, run_dir) for label, _cmd, run_dir in runs]


def _end_group(proc: subprocess.Popen[str]) -> None:
    """TERM, then KILL, the process group this module started (never anything else)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def read_run(label: str, run_dir: Path) -> RunResult:
    """Rank 0's newest start event with the steps and rebalances that follow it."""
    start: StartEvent | None = None
    steps: list[StepEvent] = []
    rebalances: list[RebalanceEvent] = []
    with open(events_path(run_dir, 0), encoding="utf-8") as f:
        for line in f:
            event = parse_event(line)
            if isinstance(event, StartEvent):
                start, steps, rebalances = event, [], []
            elif isinstance(event, StepEvent):
                steps.append(event)
            elif isinstance(event, RebalanceEvent):
                rebalances.append(event)
    if start is None:
        raise RuntimeError(f"{label}: no start event in {run_dir}")
    return RunResult(label=label, run_dir=run_dir, start=start, steps=steps, rebalances=rebalances)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s code; a failed run, Ctrl-C or SIGTERM ends with a one-line
    message (the run's process group has already been ended by ``run_trainer``)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # TERM (and INT, even where a shell started us with it ignored) unwinds through
    # run_trainer, which ends the run's process group before the benchmark exits.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


def baseline_tree(parser: argparse.ArgumentParser, value: Path | None) -> Path | None:
    """The ``--baseline DIR`` checkout, resolved; a parser error unless it holds a trainer."""
    if value is None:
        return None
    if not (value / "trainer" / "__main__.py").is_file():
        parser.error(f"--baseline {value}: no trainer/__main__.py there")
    return value.resolve()


def commit_tree(commit: str, into: Path) -> Path:
    """``commit``'s files exported into the new folder ``into`` (``git archive``, no shell):
    the code a ``--before COMMIT`` arm runs."""
    into.mkdir()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit],
                               stdout=subprocess.PIPE)
    assert archive.stdout is not None
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {commit}: exit {archive.returncode}")
    return into


BASELINE_HELP = "another checkout (e.g. a git worktree of an older commit) whose trainer "
"""Start of the ``--baseline`` help text; each benchmark says what the baseline runs."""


def solo_batches(global_batch: int) -> tuple[int, ...]:
    """Batch sizes a rank is measured at alone for a solo PEAK: B, B/2 and B/4.

    Time per sample on a CPU depends on the batch size (caches), so one size alone would not
    bound what a rank can do with the smaller share it gets in a pair.
    """
    return tuple(
        sorted({global_batch, max(1, global_batch // 2), max(1, global_batch // 4)}, reverse=True)
    )
