"""``corral export k8s``: the run cluster.toml describes, as Kubernetes manifests.

The manifests come from ``remote.api.export_kubernetes``; this module only parses the
command and writes them: one YAML stream on stdout, or one file per object with ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from remote.api import K8S_FORMATS


def add_export_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``corral export`` through ``cli.build_parser``'s factory."""
    export = command("export", "Write the run cluster.toml describes for another scheduler: "
                     "`corral export k8s` writes Kubernetes manifests (a PyTorchJob, JobSet or "
                     "TrainJob whose pods run corral's trainer with the flags `corral run` "
                     "gives each host; see docs/kubernetes.md).")
    export.add_argument("target", choices=("k8s",), help="k8s: Kubernetes manifests")
    export.add_argument("--format", choices=K8S_FORMATS,
                        help="the job object (default: pytorchjob when the hosts are at most "
                        "two kinds and rank 0's host is the only one of its kind or all are "
                        "one kind, else jobset)")
    export.add_argument("--out", metavar="DIR", type=Path,
                        help="write one YAML file per object into DIR, replacing an earlier "
                        "export there whole (default: one YAML stream on stdout)")
    export.add_argument("--dry-run", action="store_true",
                        help="print the manifests on stdout and write no file, even with --out")


async def cmd_export(args: argparse.Namespace, console: Console) -> int:
    """Write (or print) the manifests, then say how to apply and copy back."""
    from console.session import load_config
    from remote.api import export_kubernetes, kubernetes_next_steps, write_kubernetes

    config = load_config(args.config)
    export = export_kubernetes(config, args.format)
    notes = Console(stderr=True) if args.out is None or args.dry_run else console
    if args.out is None or args.dry_run:
        sys.stdout.write(export.yaml())
        sys.stdout.flush()
        source = str(args.out) if args.out is not None else "FILE.yaml"
    else:
        written = write_kubernetes(export, args.out)
        console.print(f"{len(written)} manifest(s) in {escape(str(args.out))}")
        source = str(args.out)
    notes.print(f"{export.format} {escape(export.job)} in namespace "
                f"{escape(export.namespace)}, run {escape(export.run_id)}. Next:")
    for line in kubernetes_next_steps(config, export, source):
        notes.print("  " + escape(line), soft_wrap=True)
    return 0


EXPORT_COMMANDS: dict[str, Callable[[argparse.Namespace, Console],
                                    Coroutine[Any, Any, int]]] = {"export": cmd_export}
"""The commands this module adds, by name (``cli.ASYNC_COMMANDS`` includes them)."""
