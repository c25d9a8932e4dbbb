"""A GPU rank's SM utilisation and peak GPU memory, from its resources events, are the same in
``corral report`` and in the console's hosts panel (one definition: ``RankFigures``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from console.model.recorded import model_from_history
from console.model.records import RowView
from console.report import ranks_table
from console.widgets.hosts import resources_text
from remote.records.history import load_history
from remote.records.summary import summarize
from trainer.events import ResourceEvent

try:
    from tests.remote.recorded import HOSTS, info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import HOSTS, info, synthetic_run, write_recorded  # type: ignore[no-redef]

GIB = 1 << 30
T0 = 1_700_000_000.0


def _run_with_gpu_samples(tmp_path: Path) -> Any:
    """The synthetic two-rank run; rank 0 on a GPU sampled three times, rank 1 on a CPU."""
    lines = synthetic_run(steps=12)
    samples = [(70.0, 2 * GIB, 3 * GIB), (90.0, 4 * GIB, 6 * GIB), (80.0, 3 * GIB, 6 * GIB)]
    for i, (util, allocated, reserved) in enumerate(samples):
        lines.insert(-2, (HOSTS[0], ResourceEvent(
            t=T0 + 0.1 * (i + 1), rank=0, gpu_util=util, gpu_mem_used=7 * GIB,
            gpu_mem_total=80 * GIB, gpu_peak_allocated=allocated, gpu_peak_reserved=reserved)))
    lines.insert(-2, (HOSTS[1], ResourceEvent(t=T0 + 0.2, rank=1, cpu_percent=99.0,
                                              rss_bytes=GIB)))
    run_dir = tmp_path / "runs" / "gpu"
    write_recorded(run_dir, info("gpu", "completed"), lines)
    return load_history(run_dir)


def test_report_and_hosts_panel_show_the_same_gpu_figures(tmp_path: Path) -> None:
    history = _run_with_gpu_samples(tmp_path)
    summary, _ = summarize(history)
    gpu, cpu = summary.ranks
    assert gpu.gpu_util == 80.0  # the mean of the samples
    assert (gpu.gpu_peak_allocated, gpu.gpu_peak_reserved) == (4 * GIB, 6 * GIB)  # the largest
    assert (cpu.gpu_util, cpu.gpu_peak_allocated, cpu.gpu_peak_reserved) == (None, None, None)

    console = Console(width=200, record=True)
    console.print(ranks_table(summary))
    report = console.export_text()
    assert "GPU util" in report and "80%" in report and "4.0G/6.0G" in report

    model = model_from_history(history, summary.outcome, cluster_name="gpu", policy="dynamic")
    rows = {row.rank: row for row in model.sorted_ranks()}
    panel = resources_text(RowView(host=HOSTS[0], rank_row=rows[0], status="done",
                                   stale=False, reason=""))
    assert panel.startswith("GPU 80%") and "peak 4.0G/6.0G" in panel
    assert resources_text(RowView(host=HOSTS[1], rank_row=rows[1], status="done", stale=False,
                                  reason="")).startswith("CPU")
