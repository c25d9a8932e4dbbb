"""Numbers, bars and sparklines as short text, the colour of a run's outcome and what a stop
found, for the panels, the command line's tables and the text report.

``—`` stands for a value not known yet; widths are in terminal cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from remote.api import HostVerdict, StopReport

SPARK_CHARS = "▁▂▃▄▅▆▇█"

OUTCOME_STYLES = {"completed": "green", "failed": "red", "stopped": "yellow"}
"""The colour of a run's final state wherever past runs are listed or reported."""


def cells(*columns: tuple[str | Text, int, str]) -> Text:
    """One row of fixed-width columns: ``(value, width, justify)`` each, a space between."""
    out = Text()
    for i, (value, width, justify) in enumerate(columns):
        if i:
            out.append(" ")
        piece = value if isinstance(value, Text) else Text(value)
        piece.truncate(width, overflow="ellipsis")
        piece.align(justify, width)  # type: ignore[arg-type]
        out.append_text(piece)
    return out


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as block characters scaled between their min and max."""
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    top = len(SPARK_CHARS) - 1
    if span <= 0:
        return SPARK_CHARS[top // 2] * len(values)
    return "".join(SPARK_CHARS[round((v - low) / span * top)] for v in values)


def fmt_rate(value: float | None) -> str:
    """Samples per second, short: ``812``, ``12.3k``."""
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def fmt_bytes(value: int | None) -> str:
    """Bytes in binary units: ``512M``, ``1.5G``."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if size >= 10 or unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.0f}T"


def gpu_peak_text(allocated: int | None, reserved: int | None) -> str:
    """Peak GPU memory as ``allocated/reserved`` (empty for a rank without a GPU)."""
    if allocated is None and reserved is None:
        return ""
    return f"{fmt_bytes(allocated)}/{fmt_bytes(reserved)}"


def state_text(state: int | None, budget: int | None) -> str:
    """A rank's training state against its budget, ``1.2G / 4.0G`` (``—`` unknown)."""
    if state is None:
        return "—"
    return fmt_bytes(state) + ("" if budget is None else f" / {fmt_bytes(budget)}")


def fmt_percent(value: float | None, *, signed: bool = False) -> str:
    """A fraction as a percentage: ``0.873`` -> ``87%``."""
    if value is None:
        return "—"
    return f"{value * 100:+.0f}%" if signed else f"{value * 100:.0f}%"


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (eighth-cell resolution)."""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest and full < width else ""
    return ("█" * full + partial).ljust(width)


def estimate_text(verdict: HostVerdict) -> str:
    """One host's line of the pre-run estimate: what adding it gives, or why it sits out."""
    name = f"`{verdict.host}`"
    missing = {"profile": "run `corral profile`",
               "link speed": "its link speed is not known (its interface shows none): set "
                             f"link_gbit in the [[hosts]] entry named {verdict.host!r}",
               "others": "another host's facts are missing",
               "split": "no split of the batch fits the hosts"}
    if verdict.missing:
        return f"{name}: no estimate: {missing.get(verdict.missing, verdict.missing)}"
    if verdict.pays:
        gain = "alone it holds the batch" if verdict.gain == float("inf") else (
            f"{verdict.gain * 100:+.0f} % throughput")
        return f"adding {name}: {gain}"
    line = (f"{name}: would sit out — its compute saved {verdict.compute_saved_s * 1000:.1f} ms, "
            f"its exchange adds {verdict.exchange_added_s * 1000:.1f} ms")
    # Sharded, a benched host still reduces and sends its slice: only leaving it out saves that.
    return line + (", benched too: it holds a slice of the state" if verdict.holds_slice else "")


def stop_report_text(report: StopReport) -> Text:
    """What a stop found on every host, for a notification or a modal."""
    if report.clean:
        hosts = len(report.remaining)
        done = f"had already {report.outcome.value}" if report.outcome else "stopped"
        return Text(f"Run {report.run_id} {done}: no process left on any host "
                    f"({hosts} host{'s' if hosts != 1 else ''} verified).")
    text = Text(f"Run {report.run_id}: stop could not verify every host.\n", style="bold red")
    for host, count in report.remaining.items():
        if count:
            text.append(f"  {host}: {count} process(es) of the run still alive\n")
    for host in report.unreachable:
        text.append(f"  {host}: unreachable, not verified\n")
    text.append("Run `corral stop` again once the hosts are reachable.")
    return text


OPT_IN_HINT = ("corral's opt-in (two lines for a Hugging Face Trainer, `Shares` for a DDP "
               "loop: docs/scripts.md)")
"""What gives a plain script's run its loss and balancing: named wherever their absence is."""
