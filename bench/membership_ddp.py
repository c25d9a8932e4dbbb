"""Live membership of a user's DDP script with corral's helper (``python bench/membership.py
--ddp-script``): what a planned leave and a join cost while the script trains.

Each round starts tests/trainer/ddp_live_script.py (an MLP, SGD with momentum, ``--pause``
seconds of stand-in compute a step) on named local hosts h0, h1, h2, one rank each through
corral's ``script_main``, as tests/trainer/scenarios/test_ddp_live.py does; after step
``--leave-at`` the
middle host h1 is asked to leave (the file ``corral leave`` writes), and once it left h3 is
launched to join (its own launch with ``CORRAL_JOIN``; ``corral join`` adds its check, push and
launch over SSH before that). Every figure comes from the runs' events:

- ``to step``: from the request (the leave file written; the joiner's launch) to the first
  completed step of the new generation on rank 0, and beside it the ``membership`` event's
  ``seconds_to_step`` (from the boundary that took the change to that step: a joiner's own
  start, its Python and torch import and the script's set-up, is not in it);
- ``state``: bytes sent to the joiner (the model's and optimizer's state dicts).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from membership_runs import ScriptRanks

from bench._common import markdown_table

HOSTS = ("h0", "h1", "h2")


def _event(run: ScriptRanks, change: str) -> dict[str, Any] | None:
    return next((e for e in run.membership() if e["change"] == change), None)


def _step_t(run: ScriptRanks, step: int) -> float:
    return next(e["t"] for e in run.events(0) if e["event"] == "step" and e["step"] == step)


def one_round(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One run through a leave and a join: each change's figures."""
    run = ScriptRanks(folder, ("--epochs", str(args.epochs), "--pause", str(args.pause)), HOSTS)
    try:
        run.start()
        run.wait_for("the leave step", lambda: run.steps_done() >= args.leave_at, 600)
        asked = time.time()
        run.ask_leave("h1")
        run.wait_for("h1 left", lambda: _event(run, "left") is not None, 600)
        launched = time.time()
        run.join("h3")
        run.wait_for("h3 joined", lambda: _event(run, "joined") is not None, 600)
        run.finish(timeout=900)
    finally:
        run.stop_all()
    rows = []
    for change, trigger in (("left", asked), ("joined", launched)):
        event = _event(run, change)
        assert event is not None
        rows.append({"change": change, "at_step": event["step"],
                     "to_step_s": _step_t(run, event["step"] + 1) - trigger,
                     "seconds_to_step": event["seconds_to_step"],
                     "state_bytes": event["state_bytes"]})
    return rows


def ddp_script_main(args: argparse.Namespace, folder: Path) -> str:
    """Every round's figures, then their medians as a markdown table."""
    rows: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for row in one_round(folder / f"ddp-{i}", args):
            print(f"  round {i + 1}: {row['change']:6} at step {row['at_step']:3}: to step "
                  f"{row['to_step_s']:6.2f} s (event {row['seconds_to_step']:.3f} s), state "
                  f"{row['state_bytes']} B", flush=True)
            rows.append(row)
    table = [[change, f"{statistics.median(r['to_step_s'] for r in mine):.2f}",
              f"{statistics.median(r['seconds_to_step'] for r in mine):.3f}",
              str(int(statistics.median(r['state_bytes'] for r in mine)))]
             for change in ("left", "joined")
             for mine in [[r for r in rows if r["change"] == change]]]
    return markdown_table(["change", "request → next step (s)", "boundary → next step (s)",
                           "state sent (B)"], table)
