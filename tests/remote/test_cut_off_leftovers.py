"""A host cut off from a run is followed until it is clean (issue 81, item 1): the run says
and records it (``cleanup``, a suspect host) when the survivors take it out, and the next
check ends a finished run's leftovers itself, by run id, saying so, while a live run's
processes are never touched. Processes are stand-ins carrying the run's id, as a rank does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from remote.checks.host_facts import HostFacts
from remote.checks.leftover_runs import judge_leftovers
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.events import CheckItem, CheckReport
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, read_run_info, run_dir_for, write_run_info
from remote.run.decide_members import members_changed
from remote.run.leftovers import end_finished_leftovers
from remote.run.lifecycle import MembershipSeen, Phase
from remote.run.loop_state import LoopState
from remote.run.record import RecordMembers, RunRecord
from trainer.events import MembershipEvent
from trainer.launch_contract import RUN_ID_ENV


def _config(tmp_path: Path, hosts: tuple[str, ...] = ("m",)) -> ClusterConfig:
    sections = tuple(HostSection(name=name, address="local", python=sys.executable,
                                 workdir=str(tmp_path / "work"), gpus=0, nproc=1)
                     for name in hosts)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master=hosts[0],
                                                run_root=str(tmp_path / "runs")),
                         hosts=sections)


def test_a_host_cut_off_is_said_and_recorded_as_one_to_finish(tmp_path: Path) -> None:
    config = _config(tmp_path, ("h0", "h1", "h2"))
    write_run_info(config, RunInfo(run_id="c-1", cluster="c", started=1.0,
                                   hosts=("h0", "h1", "h2"), state="running"))
    seen = MembershipSeen(MembershipEvent(t=5.0, rank=0, generation=1, step=60, change="left",
                                          hosts=("h2",), cause="unreachable", world_size=2))
    state = LoopState(run_id="c-1", phase=Phase.RUNNING, launching=True, config=config,
                      followed=read_run_info(config, "c-1"), cluster_hosts=config.hosts)
    decision = members_changed(state, seen, 5.0)
    record = next(a for a in decision.actions if isinstance(a, RecordMembers))
    assert record.cut_off == ("h2",)
    said = " ".join(getattr(e, "text", "") for e in decision.events)
    assert "h2 cut off at step 60" in said and "corral will finish what is left there" in said
    run = RunRecord(config, read_run_info(config, "c-1"))
    run.apply(record)
    run.state("completed")
    info = read_run_info(config, "c-1")
    assert info.state == "completed" and info.left_hosts == ("h2",)
    assert info.suspect_hosts == ("h2",) and "h2 cut off at step 60" in info.cleanup
    asked = replace(seen, event=replace(seen.event, cause="asked"))
    calm = members_changed(state, asked, 5.0)
    assert next(a for a in calm.actions if isinstance(a, RecordMembers)).cut_off == ()


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """A process of run c-1 (completed) and one of c-2 (running), as ranks carry them."""
    config = _config(tmp_path)
    procs = {}
    for run_id in ("c-1", "c-2"):
        procs[run_id] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "--run-dir",
             run_dir_for(config, run_id)], env={**os.environ, RUN_ID_ENV: run_id},
            start_new_session=True)
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _ps(procs: dict[str, subprocess.Popen[bytes]], config: ClusterConfig) -> str:
    return "\n".join(f"{p.pid} {run_id} {sys.executable} -c x --run-dir "
                     f"{run_dir_for(config, run_id)}" for run_id, p in procs.items())


async def test_the_check_ends_a_finished_runs_leftovers_and_leaves_a_live_runs(
        tmp_path: Path, stand_ins: dict[str, subprocess.Popen[bytes]]) -> None:
    config = _config(tmp_path)
    for run_id, state in (("c-1", "completed"), ("c-2", "running")):
        write_run_info(config, RunInfo(run_id=run_id, cluster="c", started=1.0, hosts=("m",),
                                       state=state, suspect_hosts=("m",)))
    facts = HostFacts()
    judge_leftovers(config.hosts[0], config, "/root", _ps(stand_ins, config), facts)
    assert facts.leftover_runs == ("c-1", "c-2")
    report = CheckReport(items=tuple(facts.items))
    pool = HostPool(config)
    try:
        both = await end_finished_leftovers(config, pool, report, {"m": ("c-1", "c-2")})
        assert stand_ins["c-1"].wait(timeout=60) != 0  # ended, by its run's id
        assert stand_ins["c-2"].poll() is None  # a live run's: never touched
        [item] = both.items
        assert not item.ok and "ended 1 process(es) of finished run c-1" in item.detail
        stand_ins["c-2"].kill()
        write_run_info(config, RunInfo(run_id="c-3", cluster="c", started=1.0, hosts=("m",),
                                       state="failed"))
        alone = CheckReport(items=(CheckItem(host="m", name="leftovers", ok=False,
                                             detail="2 process(es)", hint="corral stop"),))
        quiet = await end_finished_leftovers(config, pool, alone, {"m": ("c-3",)})
        assert quiet.items[0].ok and quiet.items[0].detail.startswith("ended 0 process(es)")
    finally:
        await pool.aclose()
    info = read_run_info(config, "c-1")
    assert info.state == "completed" and info.suspect_hosts == ()
    assert "1 process(es) left on m ended by corral" in info.cleanup


def test_corral_runs_end_names_the_host_cut_off_and_that_corral_finishes_it() -> None:
    from console.follow import cut_off_lines
    from console.model.run import RunModel
    from remote.events import HostStatus

    model = RunModel.of_run("c-1")
    for host, detail in (("h1", "left at step 9 (asked)"),
                         ("h2", "left at step 60 (unreachable)")):
        model.apply(HostStatus(t=1.0, host=host, state="left", detail=detail))
    assert cut_off_lines(model) == [
        "h2 was cut off (left at step 60 (unreachable)): its ranks end by themselves; corral "
        "will finish what is left there when h2 is back (corral status, check or run)"]


def test_corral_stop_of_a_finished_run_says_which_leftovers_it_ended(
        tmp_path: Path, stand_ins: dict[str, subprocess.Popen[bytes]],
        capsys: pytest.CaptureFixture[str]) -> None:
    from console.cli import main

    config = _config(tmp_path)
    toml = tmp_path / "cluster.toml"
    toml.write_text(f'[cluster]\nname = "c"\nrun_root = "{tmp_path / "runs"}"\n[[hosts]]\n'
                    f'name = "m"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path / "work"}"\n')
    write_run_info(config, RunInfo(run_id="c-1", cluster="c", started=1.0, hosts=("m",),
                                   state="completed", suspect_hosts=("m",),
                                   config_path=str(toml)))
    stand_ins["c-2"].kill()
    assert main(["stop", "c-1", "--grace", "1", "-c", str(toml)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert ("run c-1 had already completed; its leftovers were ended: 1 process(es) on m; no "
            "process of it is left on any host") in said
    assert stand_ins["c-1"].wait(timeout=30) != 0
    assert main(["stop", "c-1", "-c", str(toml)]) == 0  # nothing left: nothing ended
    assert "had already completed: nothing to stop" in " ".join(capsys.readouterr().out.split())
    assert read_run_info(config, "c-1").state == "completed"
