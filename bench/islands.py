"""Islands joining and leaving a low-communication run at an outer step (issues 61, 62): the time
from each change to the next completed round (trainer/lowcomm/islands.py).

Each round runs one live run (``--exchange local``, live membership, simple_cnn on synthetic
data, rounds of ``--round-steps`` inner steps per island, an emulated ``--slowdown`` so rounds
last long enough for changes mid-run) on named local hosts h0, h1, h2 (one rank each, as
tests/trainer/membership_runs.py starts them), and makes three changes in turn, each after the
last one landed:

1. **join** of h3 (a joiner launched with ``CORRAL_JOIN``, as ``corral join`` starts one):
   trigger = rank 0's decision at the round's end that admits it (the ``membership`` event's
   ``seconds_to_step`` counts from there; the joiner's own start is before it and not counted);
2. **planned leave** of h2 (``RunLayout.leave_request``, what ``corral leave`` writes): trigger
   = the bench writing the request;
3. **lost island**: h1's rank SIGKILLed mid-round: trigger = the kill.

Figures per change: ``to round``: from the trigger to the end of the first round with the new
island set (the round events' ``t`` and ``island_hosts``; the bench's clock is the events'
clock); ``event``: the ``membership`` event's ``seconds_to_step`` (from the request or loss as
the ranks saw it to the next completed round); ``round``: the median round time before the
change, so ``to round / round`` says how many rounds a change costs.

    python bench/islands.py [--rounds N] [--round-steps H] [--slowdown S] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "trainer")]

from membership_runs import LiveRun, live_run  # noqa: E402

from bench._common import markdown_table  # noqa: E402

HOSTS = ("h0", "h1", "h2")
WAIT_S = 300.0
"""The longest the bench waits for a change to land."""


def rounds_of(run: LiveRun) -> list[dict[str, Any]]:
    return [e for e in run.events(0) if e["event"] == "round"]


def landed(run: LiveRun, hosts: tuple[str, ...], after: float) -> float:
    """The end (``t``) of the first round after ``after`` whose islands are ``hosts``."""
    found: list[float] = []

    def done() -> bool:
        found[:] = [r["t"] for r in rounds_of(run)
                    if r["t"] > after and tuple(r["island_hosts"]) == hosts]
        return bool(found)

    run.wait_for(f"a round of {' | '.join(hosts)}", done, timeout=WAIT_S)
    return found[0]


def round_s(run: LiveRun, before: float) -> float:
    """The median round time of the rounds that ended before ``before``."""
    times = [r["round_s"] for r in rounds_of(run) if r["t"] <= before]
    return statistics.median(times[-5:]) if times else float("nan")


def one_run(folder: Path, flags: list[str]) -> list[dict[str, Any]]:
    """One live run through the three changes: a row per change."""
    rows = []
    with live_run(folder, flags, HOSTS) as run:
        run.join("h3")
        joined_at = landed(run, ("h0", "h1", "h2", "h3"), 0.0)
        event = next(e for e in run.membership() if e["change"] == "joined")
        # The decision's time: the round before the first with h3 ended there.
        decided = max(r["t"] for r in rounds_of(run) if r["t"] < joined_at)
        rows.append({"change": "join h3", "to_round": joined_at - decided,
                     "event": event["seconds_to_step"], "round": round_s(run, decided)})
        for change, act, hosts in (("leave h2 (asked)", lambda: run.ask_leave("h2"),
                                    ("h0", "h1", "h3")),
                                   ("h1 killed", lambda: run.kill(1), ("h0", "h3"))):
            start = time.time()
            act()
            at = landed(run, hosts, start)
            left = [e for e in run.membership() if e["change"] == "left"][-1]
            rows.append({"change": change, "to_round": at - start,
                         "event": left["seconds_to_step"], "round": round_s(run, start)})
        run.finish()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-steps", type=int, default=2)
    parser.add_argument("--slowdown", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    flags = ["--exchange", "local", "--samples", "512", "--global-batch", "24", "--seed", "3",
             "--optimizer", "adamw", "--lr", "0.003", "--round-steps", str(args.round_steps),
             "--steps", str(args.steps), "--checkpoint-every", "0", "--policy", "static",
             "--slowdown", str(args.slowdown)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="corral-islands-") as tmp:
        for index in range(args.rounds):
            rows += one_run(Path(tmp) / f"run-{index}", flags)
    table = []
    for change in dict.fromkeys(r["change"] for r in rows):
        mine = [r for r in rows if r["change"] == change]
        med = {key: statistics.median(r[key] for r in mine) for key in ("to_round", "event",
                                                                         "round")}
        table.append([change, f"{med['to_round']:.2f}", f"{med['event']:.2f}",
                      f"{med['round']:.2f}", f"{med['to_round'] / med['round']:.1f}"])
    print(markdown_table(["change", "to round (s)", "event (s)", "round (s)", "rounds"], table))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
