"""``corral mlflow`` and ``corral aim``: recorded runs sent to the experiment trackers.

A run followed with ``[tracking]`` set is logged live; these convert the rest from this
machine's copy of the events (runs from before, a tracker that was down, a follower that was
killed), continuing each tracker run where it stopped. ``results_cli`` adds them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

TRACKERS = {"mlflow": "MLflow (the mlflow extra)",
            "aim": "Aim (the aim extra; Python <= 3.12)"}


def add_tracking_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``mlflow`` and ``aim`` through ``cli.build_parser``'s factory."""
    for name, what in TRACKERS.items():
        parser = command(name, f"Log recorded runs to {what} where [tracking] {name} says, "
                         "from this machine's copy of their events: the steps the tracker "
                         "has not had yet, then the outcome; a run a follower is logging "
                         "right now is left to it.")
        parser.add_argument("runs", metavar="RUN", nargs="*",
                            help="run ids or names (default: every run of this cluster)")


async def convert(tracker: str, args: argparse.Namespace, console: Console) -> int:
    """Send each run to ``tracker``; 1 when some could not be."""
    from console.session import load_config
    from remote.api import convert_tracker, find_runs, list_runs, local_run_dir

    config = load_config(args.config)
    infos = find_runs(config, args.runs) if args.runs else list_runs(config)
    failed = 0
    for info in infos:
        done = convert_tracker(config, info, local_run_dir(config, info.run_id), tracker)
        for line in done.warnings:
            console.print(f"{escape(info.label)}: {escape(line)}")
        if done.tracker_run is None and not done.warnings:
            console.print(f"{escape(info.label)}: being followed: logged live")
        elif done.tracker_run is None:
            failed += 1
        else:
            console.print(f"{escape(info.label)}: {tracker} run {done.tracker_run}, "
                          f"steps up to {done.last_step}")
    return 1 if failed else 0


async def cmd_mlflow(args: argparse.Namespace, console: Console) -> int:
    """Send recorded runs to MLflow."""
    return await convert("mlflow", args, console)


async def cmd_aim(args: argparse.Namespace, console: Console) -> int:
    """Send recorded runs to Aim."""
    return await convert("aim", args, console)
