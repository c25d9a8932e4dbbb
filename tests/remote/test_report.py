"""``corral report`` on recorded runs: what happened to failed, stopped and restarted runs,
the ``--json`` schema against docs/report.md, plots, and newer event fields."""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

import console.cli as cli
from figures.solo import HostSolo, SoloBaseline
from remote.records import summary as summary_module
from remote.records.history import load_history
from trainer.events import MembershipEvent, StepEvent

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]

DOC = Path(__file__).resolve().parents[2] / "docs" / "report.md"


def _cluster(root: Path) -> Path:
    path = root / "cluster.toml"
    path.write_text(f"""
[cluster]
name = "rep"
master = "fast"
run_root = "{root / 'runs'}"
[[hosts]]
name = "fast"
address = "local"
[[hosts]]
name = "slow"
address = "local"
""", encoding="utf-8")
    return path


def _report(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    code = cli.main(["-c", str(path), "report", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _json(capsys: pytest.CaptureFixture[str], path: Path, *runs: str) -> dict[str, Any]:
    code, out = _report(capsys, path, *runs, "--json")
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_failed_run_says_where_it_stopped_and_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-f", info(
        "rep-f", "failed", detail="slow rank 1 failed: exit 1"),
        synthetic_run(steps=12, end="failed", error="RuntimeError: CUDA out of memory"))
    code, out = _report(capsys, path, "rep-f")
    assert code == 0
    assert "failed after step 12/12" in " ".join(out.split())
    assert "rank 1 on slow: RuntimeError: CUDA out of memory" in " ".join(out.split())
    outcome = _json(capsys, path, "rep-f")["runs"][0]["outcome"]
    assert outcome == {"state": "failed", "detail": "slow rank 1 failed: exit 1",
                       "failed_rank": 1, "failed_host": "slow",
                       "error": "RuntimeError: CUDA out of memory", "ended_at_step": 12,
                       "last_lines": [], "collateral": [], "cleanup": ""}


def test_an_interrupted_run_is_reported_as_stopped_with_its_last_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-i", info("rep-i", "stopped", detail="stopped by user"),
                   synthetic_run(steps=9, end="interrupted"))
    code, out = _report(capsys, path)  # the newest run by default
    assert code == 0
    flat = " ".join(out.split())
    assert "was stopped (interrupted) after step 9/9" in flat
    assert "Recorded: stopped by user" in flat


def test_ranks_failing_as_a_stop_ends_their_peers_are_no_failure_of_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``corral stop`` of a script run: rank 0 took the TERM first (interrupted), rank 1's
    collective then failed on the closed connection. On the old code: "First failure: rank 1
    on slow: RuntimeError: Connection closed by peer" and its traceback, for a stop asked for."""
    path = _cluster(tmp_path)
    closed = "RuntimeError: Connection closed by peer [127.0.0.1]:51414"
    lines = synthetic_run(steps=9, end="failed", error=closed)
    write_recorded(tmp_path / "runs" / "rep-s", info("rep-s", "stopped",
                                                     detail="stopped on request"), lines)
    code, out = _report(capsys, path, "rep-s")
    flat = " ".join(out.split())
    assert code == 0 and "First failure" not in flat, flat
    assert f"Failed as the stop ended their peers (no failure of the run's own): rank 1 on " \
        f"slow: {closed}" in flat
    outcome = _json(capsys, path, "rep-s")["runs"][0]["outcome"]
    assert outcome["failed_rank"] is None and outcome["collateral"] == [f"rank 1 on slow: {closed}"]
    # a rank that failed before the stop reached any: the run's own failure, named first
    early = [(h, dataclasses.replace(e, t=e.t - 5.0) if getattr(e, "status", "") == "failed"
              else e) for h, e in lines]
    write_recorded(tmp_path / "runs" / "rep-e", info("rep-e", "stopped",
                                                     detail="stopped on request"), early)
    assert _json(capsys, path, "rep-e")["runs"][0]["outcome"]["failed_rank"] == 1


def test_a_restarted_run_counts_each_step_once_and_the_time_lost(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    first = synthetic_run(steps=10, move_at=None, end="interrupted")
    # Relaunched 30 s after step 10, from the checkpoint of step 5: steps 6-10 run again.
    t_restart = 1_700_000_000.0 + 10 * 0.05 + 30.0
    second = synthetic_run(steps=20, t0=t_restart, move_at=None, first_step=5)
    write_recorded(tmp_path / "runs" / "rep-r", info("rep-r", "completed"), first + second)
    run = _json(capsys, path, "rep-r")["runs"][0]
    assert run["restarts"] == 1 and run["steps_done"] == 20
    redone = 5 * (8 * 0.003 + 0.002)
    assert run["lost_s"] == pytest.approx(30.0 + redone, abs=1e-6)
    step_s = 8 * 0.003 + 0.002
    assert run["mean_samples_per_s"] == pytest.approx(16 / step_s)


def test_moves_have_their_measured_gain_and_ranks_their_utilisation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-m", info("rep-m", "completed", name="moves"),
                   synthetic_run(steps=20))
    run = _json(capsys, path, "moves")["runs"][0]  # found by name
    assert run["name"] == "moves"
    (move,) = run["moves"]
    # Before: slowest 0.024 s; after (12, 4): max(0.012, 0.012) = 0.012 s -> 50 % faster.
    assert move["step"] == 6 and move["measured_gain"] == pytest.approx(0.5)
    slow = run["ranks"][1]
    assert slow["utilisation"] == pytest.approx(1 - 0.002 * 20 / (
        5 * (0.024 + 0.002) + 15 * (0.012 + 0.002)), rel=1e-6)
    assert slow["final_share"] == pytest.approx(0.25)
    assert run["loss"] == {"final": 0.1, "final_step": 20, "best": 0.1, "best_step": 20}


def test_eval_events_and_a_steps_lr_are_picked_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-e", info("rep-e", "completed"),
                   synthetic_run(steps=20, extra=True))
    run = _json(capsys, path, "rep-e")["runs"][0]
    assert run["eval"]["loss"] == {"final": 0.15, "final_step": 20, "best": 0.15,
                                   "best_step": 20}
    assert run["eval"]["accuracy"]["best"] == pytest.approx(0.2)  # higher is better
    assert run["final_lr"] == pytest.approx(0.0005)
    code, out = _report(capsys, path, "rep-e")
    assert code == 0 and "eval accuracy" in out


def _documented(section: str) -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", body, flags=re.M))


def test_the_json_schema_in_docs_matches_the_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cls in (summary_module.RunSummary, summary_module.Outcome, summary_module.RankSummary,
                summary_module.Move, summary_module.Metric, summary_module.Sample,
                summary_module.GenerationRow, SoloBaseline, HostSolo):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert _documented(cls.__name__) == fields, cls.__name__
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-j", info("rep-j", "completed"),
                   synthetic_run(steps=20))
    body = _json(capsys, path, "rep-j")
    assert body["schema"] == summary_module.SCHEMA_VERSION == 1
    run = body["runs"][0]
    assert set(run) == _documented("RunSummary")
    assert set(run["outcome"]) == _documented("Outcome")
    assert set(run["ranks"][0]) == _documented("RankSummary")
    assert set(run["moves"][0]) == _documented("Move")
    assert set(run["loss"]) == _documented("Metric")
    assert set(run["baseline"]) == _documented("SoloBaseline")
    assert set(run["baseline"]["hosts"][0]) == _documented("HostSolo")


def test_plot_writes_a_png_and_chart_draws_in_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-p", info("rep-p", "completed"),
                   synthetic_run(steps=20, extra=True))
    png = tmp_path / "out" / "runs.png"
    code, out = _report(capsys, path, "rep-p", "--plot", str(png), "--chart")
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "step 1" in out and "┤" in out and "samples/s" in out


def test_without_matplotlib_plot_names_the_extra(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-n", info("rep-n", "completed"),
                   synthetic_run(steps=5))
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out = _report(capsys, path, "--plot", str(tmp_path / "x.png"))
    assert code == 2 and "corral[plot]" in out and "Traceback" not in out


def test_an_unknown_run_is_a_usage_error_naming_the_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-x", info("rep-x", "completed", name="known"),
                   synthetic_run(steps=5))
    code, out = _report(capsys, path, "nope")
    assert code == 2 and "no run 'nope'" in out and "known" in out


def test_a_step_dominated_by_fixed_cost_is_explained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny model: each step takes 0.1 s while the slowest rank computes for at most
    0.024 s; the report names the fixed per-step cost and that fewer ranks are faster."""
    path = _cluster(tmp_path)
    lines = []
    for host, event in synthetic_run(steps=20):
        if isinstance(event, StepEvent):
            event = dataclasses.replace(event, step_s=0.1)
        lines.append((host, event))
    write_recorded(tmp_path / "runs" / "rep-t", info("rep-t", "completed"), lines)
    run = _json(capsys, path, "rep-t")["runs"][0]
    slowest = 5 * 0.024 + 15 * 0.012
    assert run["outside_compute"] == pytest.approx(1 - slowest / (20 * 0.1))
    code, out = _report(capsys, path, "rep-t")
    assert code == 0
    flat = " ".join(out.split())
    assert "dominated by fixed per-step cost" in flat and "fewer ranks are faster" in flat
    write_recorded(tmp_path / "runs" / "rep-n", info("rep-n", "completed"),
                   synthetic_run(steps=20))
    assert "fixed per-step cost" not in " ".join(_report(capsys, path, "rep-n")[1].split())


def test_the_plot_gives_each_quantity_its_axes_and_each_rank_its_own_line_look(
        tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from console.plot_png import _pyplot, draw

    write_recorded(tmp_path / "runs" / "rep-x", info("rep-x", "completed"),
                   synthetic_run(steps=20, extra=True, move_at=None))  # equal shares throughout
    summary, series = summary_module.summarize(load_history(tmp_path / "runs" / "rep-x"))
    plt = _pyplot()
    figure = draw(plt, [(summary, series)])
    try:
        axes = {axis.get_ylabel(): axis for axis in figure.axes}
        assert list(axes) == ["loss", "eval accuracy", "samples/s", "share of global batch"]
        assert {line.get_label() for line in axes["eval accuracy"].lines} == {
            "rep-x eval accuracy"}  # accuracy is not on the loss axes
        assert "rep-x eval loss" in {line.get_label() for line in axes["loss"].lines}
        shares = axes["share of global batch"].lines
        assert len(shares) == 2
        assert [line.get_ydata()[0] for line in shares] == [0.5, 0.5]  # on top of each other
        looks = {(line.get_linestyle(), line.get_marker(), line.get_color()) for line in shares}
        assert len(looks) == 2 and shares[0].get_marker() != shares[1].get_marker()
        assert shares[0].get_markevery() != shares[1].get_markevery()
    finally:
        plt.close(figure)


def test_the_report_lists_each_generation_of_a_run_whose_hosts_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    left = MembershipEvent(t=1_700_000_000.3, rank=0, generation=1, step=6, change="left",
                           hosts=("slow",), cause="ranks_died", redone_steps=1, world_size=1,
                           members=(0,), seconds_to_step=4.5,
                           said="disk full on slow at /r/metrics: the step event could not be "
                                "written")
    refused = MembershipEvent(t=1_700_000_000.5, rank=0, generation=1, step=9,
                              change="refused", hosts=("slow",), world_size=1,
                              reason="torch 2.1 on slow, 2.4 on fast")
    write_recorded(tmp_path / "runs" / "rep-g", info("rep-g", "completed"),
                   [*synthetic_run(steps=12), ("fast", left), ("fast", refused)])
    run = _json(capsys, path, "rep-g")["runs"][0]
    assert [(g["generation"], g["change"], g["hosts"], g["cause"], g["redone_steps"])
            for g in run["generations"]] == [(1, "left", ["slow"], "ranks_died", 1),
                                             (1, "refused", ["slow"], None, 0)]
    code, out = _report(capsys, path, "rep-g")
    flat = " ".join(out.split())
    assert code == 0 and "membership (live joins and leaves)" in flat
    assert "ranks_died" in flat and "4.5 s" in flat and "torch 2.1 on slow" in flat
    # what the lost host's ranks said (on the old code: "ranks_died" alone)
    assert "ranks_died: disk" in flat, flat  # the cell wraps after it
    assert run["generations"][0]["reason"].startswith("disk full on slow at ")


def test_a_host_cut_off_is_named_in_the_report_until_it_is_clean(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    said = ("slow cut off at step 8: its ranks end by themselves within 30 s of the cut; "
            "corral will finish what is left there when slow is back")
    write_recorded(tmp_path / "runs" / "rep-k", dataclasses.replace(
        info("rep-k", "completed"), suspect_hosts=("slow",), cleanup=said),
        synthetic_run(steps=12))
    code, out = _report(capsys, path, "rep-k")
    assert code == 0 and f"Cleanup: {said}" in " ".join(out.split())
    assert _json(capsys, path, "rep-k")["runs"][0]["outcome"]["cleanup"] == said
