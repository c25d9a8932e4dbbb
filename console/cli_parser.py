"""The ``corral`` argument parser: every command, option and help text (``corral --help``).

``console.cli`` runs what it parses; docs/cli.md documents every command and option here (a
test checks that each one is there).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from console.export_cli import add_export_parser
from console.results_cli import add_results_parsers
from trainer.settings.run_settings import POLICIES

DEFAULT_CONFIG = Path("cluster.toml")

AddCommand = Callable[[str, str], argparse.ArgumentParser]
"""Adds a subcommand with its help text (and the ``-c FILE`` option) and returns its parser."""


def _config_option(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser the option has its default; on a subcommand it is SUPPRESSed so that
    # ``corral -c a.toml run`` and ``corral run -c a.toml`` both work.
    parser.add_argument(
        "-c", "--config", metavar="FILE", type=Path,
        default=DEFAULT_CONFIG if top else argparse.SUPPRESS,
        help="the cluster description to use (default: ./cluster.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``corral`` argument parser with every subcommand and option."""
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Train one PyTorch model across a mixed bag of machines. Without a "
        "command, opens the console on the cluster file.",
    )
    _config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=text, description=text)
        _config_option(child, top=False)
        return child

    # The order here is the order of ``corral --help``.
    add_console_parser(command)
    add_init_parser(command)
    command("check", "Pre-flight check of every host: reachable, platform, versions, GPUs, "
            "disk, leftover processes, rendezvous port, network interface, every pair of "
            "hosts connected and measured. Exit 1 on any failure.")
    add_run_parsers(command)
    add_host_parsers(command)
    add_results_parsers(command)
    add_export_parser(command)
    notify = command("notify", "Send the [notify] section's notices by hand (see "
                     "docs/console.md: a run's moments are sent while corral follows it).")
    notify.add_argument("--test", action="store_true", required=True,
                        help="send one test notice to every [notify] URL and wait for it; "
                        "exit 1 when one was not sent")
    return parser


def add_console_parser(command: AddCommand) -> None:
    """``corral console``: in this terminal, or served to a browser."""
    from console.serve import DEFAULT_PORT, ROLES

    console = command("console", "Open the terminal console (the default command); with "
                      "--serve, the same console in a browser (docs/console.md).")
    console.add_argument("--serve", action="store_true",
                         help="serve the console to a browser on 127.0.0.1 (needs the serve "
                         "extra: pip install 'corral[serve]'); prints a URL with a one-time "
                         "token, read-only: the keys that change a run are refused. From "
                         "another machine: ssh -L (docs/console.md)")
    console.add_argument("--port", type=int, metavar="N",
                         help=f"with --serve: the port (default: {DEFAULT_PORT}; 0: any free "
                         "one)")
    console.add_argument("--controls", action="store_true",
                         help="with --serve: also print a second URL, with its own token, "
                         "for the console with its controls (start, stop, restart, check)")
    # How the server starts each browser tab's console; the role, never a token.
    console.add_argument("--served", choices=ROLES, help=argparse.SUPPRESS)


def add_init_parser(command: AddCommand) -> None:
    """``corral init``."""
    init = command("init", "Write a commented cluster.toml (the -c FILE, default "
                   "./cluster.toml) to start from: the local emulated demo, or one host per "
                   "ssh_config alias with --hosts; with --script, a run of your own script. "
                   "Never overwrites a file.")
    init.add_argument("--hosts", metavar="ALIAS,...",
                      help="ssh_config aliases, one [[hosts]] entry each (GPUs and ranks are "
                      "left to detection)")
    init.add_argument("--local", metavar="N", type=int,
                      help="N hosts on this machine (address = \"local\"), its cores shared "
                      "by their ranks (threads set); the same as --hosts local,local,...")
    init.add_argument("--script", metavar="FILE", type=Path,
                      help="a [run] for your own training script, run as is (a path from this "
                      "folder): no key of corral's own tasks; this machine as the host unless "
                      "--hosts names them")


MEMBERSHIP_COMMANDS = (
    ("leave", "Take a host out of a running run at its next step boundary: its share goes "
     "to the others, nothing is redone, its processes end cleanly (corral's own training "
     "loop with live membership, or a script with the DDP helper or the HF/TRL opt-in, as "
     "for join; not the "
     "master's host). With `exchange = "
     "\"local\"`: at the end of the round under way, its change in the round's average.",
     "a host of the run (cluster.toml's name)"),
    ("join", "Bring a host of cluster.toml into a running run (one not in it, or one that "
     "left): the pre-flight check and the mesh probe with the run's hosts, the push, then "
     "its ranks are let in at a step boundary with the run's state (corral's own training "
     "loop: live membership is on unless `[run] live_membership = false`; a script with "
     "the DDP helper, at the step its loop asks for next; with the HF/TRL opt-in, at the "
     "Trainer's step end). With "
     "`exchange = \"local\"`: at a round's end, as a new island with the anchor and the "
     "outer momentum.",
     "a host of cluster.toml, not in the run"),
)
"""``corral leave`` and ``corral join``: the name, the help and HOST's help of each."""


def add_run_parsers(command: AddCommand) -> None:
    """``corral run``, ``stop``, ``leave``, ``join``, ``status`` and ``attach``: a run's
    life."""
    run = command("run", "Check, push the code and start a run on every host, then follow it "
                  "here until it ends (exit 0 only if it completed). Ctrl-C detaches and "
                  "leaves the run going; `corral stop RUN` ends it.")
    run.add_argument("--detach", action="store_true",
                     help="return as soon as every host is running instead of following")
    run.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                     help="relaunch an earlier run from its newest good checkpoint: RUN (an id "
                     "or a unique start of one), else the newest run that has a checkpoint")
    run.add_argument("--policy", choices=POLICIES,
                     help="balancing policy for this run (default: [run] policy)")
    run.add_argument("--name", metavar="NAME",
                     help="a name for the run, shown with its id everywhere (default: [run] "
                          "name; a resumed run keeps its own)")
    run.add_argument("--script", metavar="FILE", type=Path,
                     help="run your own training script as is (instead of [run] script or "
                     "task), from this folder as torchrun would (it travels with the script); "
                     "its arguments follow --: corral run --script train.py -- --lr 1e-4")
    run.add_argument("--code", metavar="DIR", type=Path,
                     help="with --script: the folder that travels when the script reaches "
                     "above this one (a repository's root; default: this folder); the ranks "
                     "still run from this folder's place inside it, as torchrun would")
    run.add_argument("script_args", nargs="*", metavar="ARG",
                     help="after --: the script's arguments (instead of [run] args)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the hosts and print the launch plan (each host's ranks, "
                     "device, backend, interface, share and exact command) without starting "
                     "anything; exit 1 if the check fails")
    stop = command("stop", "Stop a run on every host (TERM, KILL after the grace period) and "
                   "verify that none of its processes is left.")
    stop.add_argument("run_id", metavar="RUN", nargs="?",
                      help="run id (default: the newest run that is still running)")
    stop.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                      help="seconds between TERM and KILL (default: 10); a "
                           "low-communication run gets twice its last round's time more, "
                           "at most 600 s (docs/lowcomm.md)")
    for name, about, which in MEMBERSHIP_COMMANDS:
        member = command(name, about)
        member.add_argument("host", metavar="HOST", help=which)
        member.add_argument("--run", dest="run_id", metavar="RUN",
                            help="run id (default: the newest run that is still running)")
        if name == "leave":
            member.add_argument("--restart", action="store_true",
                                help="a run without live membership (a script run as is): stop "
                                "it and launch it again on the other hosts from its newest "
                                "checkpoint (the script's own), today's restart path")
    command("status", "List the runs of this cluster and their state.")
    attach = command("attach", "Reconnect to a live run: in the console, or with --headless "
                     "in this terminal (Ctrl-C detaches again).")
    attach.add_argument("run_id", metavar="RUN", help="run id (see `corral status`)")
    attach.add_argument("--headless", action="store_true",
                        help="follow in this terminal instead of opening the console")


def add_host_parsers(command: AddCommand) -> None:
    """``corral profile``, ``setup`` and ``trust``: the hosts themselves."""
    command("profile", "Benchmark the configured model on every host and store the profiles "
            "that the proportional and dynamic policies start from.")
    setup = command("setup", "Make hosts that have only Python able to run the trainer: "
                    "run each host's own `setup` lines, install tcmalloc for faster CPU ranks "
                    "where it is missing (as root or with password-less sudo), then make a "
                    "virtual environment in its "
                    "workdir with the master's torch (the CUDA build where nvidia-smi shows a "
                    "driver, else the CPU build). Idempotent; the host's `python` can then be "
                    "left out of cluster.toml. Exit 1 if a host failed.")
    setup.add_argument("hosts", metavar="HOST", nargs="*",
                       help="host names from cluster.toml (default: every host)")
    trust = command("trust", "Fetch a host's SSH key, show its fingerprint and, once you "
                    "confirm, make it the host's key in the known_hosts file (replacing a "
                    "changed one).")
    trust.add_argument("host", metavar="HOST", help="a host name from cluster.toml")
    trust.add_argument("--yes", action="store_true",
                       help="trust the key shown without asking (scripts; compare the "
                       "fingerprint it prints with the host's own)")
