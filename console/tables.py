"""The command line's tables: a pre-flight report, the recorded runs, host profiles.

Rich renderables, printed by ``corral check``, ``run --dry-run``, ``status`` and ``profile``
(and by the follower when a run fails its pre-flight check).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from console.formatting import OUTCOME_STYLES, estimate_text

if TYPE_CHECKING:
    from remote.api import CheckReport, HostProfile, RunInfo


def check_table(report: CheckReport) -> Table:
    """A pre-flight report as a table: host, check, result, detail and the fix for failures."""
    table = Table(title="corral check", title_justify="left")
    # The fix column only when there is something to fix or to warn about.
    with_fix = any(item.hint for item in report.items)
    for name in ("host", "check", "result", "detail", "fix")[: 5 if with_fix else 4]:
        table.add_column(name, overflow="fold")
    for item in report.items:
        warning = item.ok and item.detail.startswith("warning")
        result = "[yellow]warn[/]" if warning else "[green]ok[/]" if item.ok else "[red]FAIL[/]"
        cells: list[str | Text] = [item.host, item.name, result, Text(item.detail),
                                   Text(item.hint)]
        table.add_row(*cells[: 5 if with_fix else 4])
    for verdict in report.estimate:  # the estimate is information, never a failure
        table.add_row(verdict.host, "estimate", "[cyan]info[/]", Text(estimate_text(verdict)),
                      *([""] if with_fix else []))
    for host, line in report.modes:  # exact / local (approximate) / sit out, predicted
        table.add_row(host, "modes", "[cyan]info[/]", Text(line), *([""] if with_fix else []))
    return table


def runs_table(runs: Sequence[RunInfo]) -> Table:
    """``corral status``: one row per recorded run, newest first."""
    table = Table(title="runs", title_justify="left")
    named = any(run.name for run in runs)
    for name in ("run", "name", "state", "started (UTC)", "hosts"):  # a run id is copied whole
        if name != "name" or named:
            table.add_column(name, no_wrap=True)
    table.add_column("detail", overflow="fold", min_width=12)
    for run in runs:
        started = time.strftime("%m-%d %H:%M:%S", time.gmtime(run.started))
        cells: list[str | Text] = [run.run_id, Text(run.name)] if named else [run.run_id]
        detail = run.detail + (f"\ncleanup: {run.cleanup}" if run.cleanup else "")
        state = Text(run.state, style=OUTCOME_STYLES.get(run.state, ""))
        table.add_row(*cells, state, started, str(len(run.hosts)), Text(detail))
    return table


def profiles_table(results: Sequence[HostProfile]) -> Table:
    """``corral profile``: device, samples/s at each measured batch, fitted cost, max batch."""
    table = Table(title="profiles", title_justify="left")
    for name in ("host", "device", "samples/s at batch", "time per sample", "fixed per step",
                 "max batch"):
        table.add_column(name, overflow="fold")
    for result in results:
        if not result.ok:
            table.add_row(result.host, Text("FAILED", style="red"), Text(result.error), "", "",
                          "")
            continue
        rates = ", ".join(f"{r:.1f} @ {b}" for b, r in zip(result.batches, result.samples_per_s,
                                                           strict=False))
        table.add_row(
            result.host, f"{result.device} {result.device_name}".strip(), rates,
            "-" if result.per_sample_s is None else f"{result.per_sample_s * 1e3:.3f} ms",
            "-" if result.fixed_s is None else f"{result.fixed_s * 1e3:.2f} ms",
            "unknown" if result.max_batch is None else str(result.max_batch),
        )
    return table
