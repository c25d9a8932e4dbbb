"""The chaos run's loop (bench/chaos.py): each fault of the schedule injected into the run a
few steps after the last, followed to its effect, then the invariants checked; after every stop
the checks of a run that ended (nothing left, ``corral check``, the replay)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench._chaos_checks import (
    Expected,
    changes,
    check_passes,
    named_cause,
    no_lock,
    nothing_left,
    params_match,
    record_agrees,
    went_on,
)
from bench._chaos_faults import INJECT, resume, stop
from bench._chaos_plan import Fault, moot
from bench._chaos_run import WORKERS, Broken, ChaosRun, netns
from trainer.run_layout import CHECKPOINT_NAME

LEFTOVER_S = 60.0 + 30.0
"""How long a host out of the run may keep a process of it: docs/reliability.md's 60 s bound
for a cut-off host, and 30 s for a loaded machine."""
RECORD_S = 30.0
"""How long the follower may take to write a change into the record."""
MASTER = "n1"


@dataclass
class Outcome:
    """What one fault did, and the invariants it broke."""

    label: str
    kind: str
    at_step: int
    what: str = ""
    ended: bool = False
    skipped: bool = False
    """Not injected: a resume the schedule did not foresee made it moot (``moot``)."""
    broken: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "BROKEN: " + "; ".join(self.broken) if self.broken else "ok"
        return (f"{self.label} at step {self.at_step}: {self.what} ({self.seconds:.0f} s) "
                f"-> {verdict}")


@dataclass
class Report:
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    params: list[tuple[int, float]] = field(default_factory=list)
    """(step, largest relative difference from the replay) at each stop compared."""
    steps: int = 0
    stops: int = 0
    wall_s: float = 0.0


def _held(run: ChaosRun, condition: Callable[[], bool], timeout: float) -> bool:
    try:
        run.wait("", condition, timeout)
    except Broken:
        return False
    return True


def live_checks(run: ChaosRun, expected: Expected) -> tuple[list[str], set[str]]:
    """A running run's invariants against the hosts in it as rank 0's events have them at
    each look (``expected``): nothing of it on a host out of it (within the bound), the
    record's hosts those in it, each running the run, and no launch lock. The broken ones,
    and the hosts in the run at the last look."""
    every = {node.name for node in run.box.nodes}
    _held(run, lambda: not nothing_left(run.processes(), every - expected.now(run.run_dir)),
          LEFTOVER_S)
    broken = nothing_left(run.processes(), every - expected.now(run.run_dir))
    _held(run, lambda: not record_agrees(run.record(), expected.now(run.run_dir),
                                         run.processes()), RECORD_S)
    members = expected.now(run.run_dir)
    return (broken + record_agrees(run.record(), members, run.processes())
            + no_lock(run.run_root), members)


def replay_diff(run: ChaosRun, scratch: Path) -> tuple[int, float]:
    """The newest checkpoint's step and its parameters' largest relative difference from one
    uninterrupted process of as many steps."""
    from runkit import one_process_flags  # tests/remote: the run's settings as trainer flags
    from trainer_runs import check, final_params, launch, max_rel_diff

    from remote.config.read import load_cluster

    named = [(int(m[1]), p) for p in (run.run_dir / "checkpoints").iterdir()
             if (m := CHECKPOINT_NAME.match(p.name))]
    step = max(named)[0]
    settings = replace(load_cluster(run.box.root / "cluster.toml").run, steps=step,
                       checkpoint_every=0)
    out = scratch / f"replay-{step}"
    check(launch(1, *one_process_flags(settings), "--run-dir", str(out), timeout=3600))
    return step, max_rel_diff(final_params(out), final_params(run.run_dir))


def ended_checks(run: ChaosRun, report: Report, scratch: Path, *, replay: bool) -> list[str]:
    """An ended run's invariants: nothing of it on any host, no lock, ``corral check`` passes;
    with ``replay``, its parameters are the replay's."""
    hosts = [node.name for node in run.box.nodes]
    _held(run, lambda: not nothing_left(run.processes(), hosts), LEFTOVER_S)
    broken = nothing_left(run.processes(), hosts) + no_lock(run.run_root)
    checked = run.corral("check")
    broken += check_passes(checked.returncode, checked.stdout + checked.stderr)
    report.stops += 1
    if replay:
        step, diff = replay_diff(run, scratch)
        report.params.append((step, diff))
        broken += params_match(diff, step)
    return broken


def resume_ended(run: ChaosRun, outcome: Outcome, report: Report, scratch: Path) -> None:
    """The run ended by itself: its cause named, nothing left, ``corral check`` passes; then
    ``corral run --resume``."""
    outcome.ended = True
    record = run.record()
    joint = "" if not outcome.what or outcome.what.endswith(", ") else "; "
    outcome.what += f"{joint}the run ended {record.get('state')}: {record.get('detail')}"
    outcome.broken += named_cause(record)
    outcome.broken += ended_checks(run, report, scratch, replay=False)
    outcome.what += resume(run)


def one_fault(run: ChaosRun, fault: Fault, members: set[str], report: Report,
              scratch: Path, replay: bool) -> tuple[Outcome, set[str]]:
    """Inject ``fault`` ``fault.after_steps`` steps from now, follow it, check; the outcome and
    the hosts in the run after it. A run that ended since the last fault settled (a late effect
    of it: a full disk's records) is checked and resumed first."""
    outcome = Outcome(fault.label(), fault.kind, run.step())
    started = time.monotonic()
    try:
        run.wait_steps(fault.after_steps)
        if run.ended():
            outcome.what = "before it, "
            resume_ended(run, outcome, report, scratch)
            members = {MASTER, *WORKERS}
            run.wait_steps(fault.after_steps)
        outcome.at_step = run.step()
        outcome.skipped = moot(fault, members)
        if outcome.skipped:
            where = "in" if fault.kind == "join" else "out of"
            outcome.what += f"; skipped: {fault.host} is already {where} the run"
            expected = Expected(frozenset(members), len(changes(run.run_dir)))
        else:
            expected = _inject(run, fault, outcome, members, report, scratch, replay)
        broken, members = live_checks(run, expected)
        if broken and run.ended():  # it ended meanwhile: an ended run's invariants apply
            resume_ended(run, outcome, report, scratch)
            broken, members = live_checks(run, _all_in(run))
        outcome.broken += broken
    except Broken as exc:
        outcome.broken.append(str(exc))
    outcome.seconds = time.monotonic() - started
    return outcome, members


def _all_in(run: ChaosRun) -> Expected:
    """Every host in the run (a resumed run launches on all), from rank 0's next event on."""
    return Expected(frozenset({MASTER, *WORKERS}), len(changes(run.run_dir)))


def _inject(run: ChaosRun, fault: Fault, outcome: Outcome, members: set[str], report: Report,
            scratch: Path, replay: bool) -> Expected:
    """``fault`` injected and followed to its effect; the hosts in the run after it, as rank
    0's events will have them (read again at each check: ``Expected``)."""
    at, seen = outcome.at_step, len(changes(run.run_dir))
    if fault.kind == "stop_resume":
        outcome.what += ("; " if outcome.what else "") + stop(run)
        outcome.broken += ended_checks(run, report, scratch, replay=replay)
        outcome.what += resume(run)
        return _all_in(run)
    outcome.what += ("; " if outcome.what else "") + INJECT[fault.kind](run, fault, seen)
    if run.ended():
        resume_ended(run, outcome, report, scratch)
        return _all_in(run)
    outcome.broken += went_on(at, run.wait_steps(2, since=at))
    return Expected(frozenset(members), seen)


def run_chaos(box: netns.NetnsCluster, plan: Sequence[Fault], *, log: Path, scratch: Path,
              seed: int, replay_at_stops: bool, progress: Callable[[Outcome], None],
              budget_s: float | None = None) -> Report:
    """``plan`` injected into one run on ``box``, then a last stop and its checks; with
    ``budget_s``, no fault starts after that many seconds (the rest of the plan is left out)."""
    report = Report(seed)
    started = time.monotonic()
    run = ChaosRun(box, log)
    run.write_config()
    try:
        run.start()
        members = {MASTER, *WORKERS}
        for fault in plan:
            if budget_s is not None and time.monotonic() - started > budget_s:
                break
            outcome, members = one_fault(run, fault, members, report, scratch, replay_at_stops)
            report.outcomes.append(outcome)
            progress(outcome)
        last = Outcome("end: stop", "", run.step())
        ended_at = time.monotonic()
        try:
            run.wait_steps(2)  # a late effect of the last fault (a full disk's records) first
            if run.ended():
                last.what = "before it, "
                resume_ended(run, last, report, scratch)
                last.what += "; "
            last.what += stop(run)
            last.broken += ended_checks(run, report, scratch, replay=True)
        except Broken as exc:
            last.broken.append(str(exc))
        last.seconds = time.monotonic() - ended_at
        report.outcomes.append(last)
        progress(last)
        report.steps = run.step()
    finally:
        run.close()
        report.wall_s = time.monotonic() - started
    return report

