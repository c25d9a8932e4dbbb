"""``corral join HOST`` (issue 61), its fast parts: what cannot join is refused with what to do
instead, before anything is touched (no check, no push, no join record); a joiner's launch is
a torchrun of its own on the host with the run's store named, every value quoted; the join
record is written whole and read back; the host's tailer takes a joiner's ranks from the line
its admitted rank prints, never torchrun's own rank numbers."""

from __future__ import annotations

import io
import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from console.cli import main
from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.config.read import load_cluster
from remote.events import HostStatus, LogLine
from remote.hosts.push import CodeBundle
from remote.records.runs import RunInfo, local_run_dir
from remote.run import tail_script
from remote.run.decide_members import join_launched
from remote.run.join import (
    JoinRecord,
    forget_join_record,
    join_config,
    joiner_alone,
    joiner_plan,
    read_join_records,
    record_path,
    write_join_record,
)
from remote.run.launch import torchrun_command
from remote.run.lifecycle import JoinLaunched, Phase
from remote.run.loop_state import LoopState
from remote.run.stream import tailer_paths
from tests.remote.test_membership_leave import _cluster  # the same cluster and run record
from trainer.membership.contract import (
    JOIN_ENV,
    JOINED_LINE,
    MEMBERSHIP_ADDR_ENV,
    MEMBERSHIP_PORT_ENV,
)

RUNNING = {"run_id": "m-1", "cluster": "m", "state": "running", "started": 1.0,
           "hosts": ["a", "b"], "membership_port": 31000, "master_addr": "10.0.0.1"}


@pytest.mark.parametrize(("host", "record", "said"), [
    ("b", RUNNING, "b is in run m-1 already (its hosts: a, b)"),
    ("a", RUNNING, "a is in run m-1 already"),
    ("z", RUNNING, "no host 'z' in"),
    ("c", {**RUNNING, "membership_port": 0}, "run m-1 has no live membership"),
    ("c", {**RUNNING, "state": "completed", "ended": 2.0}, "run m-1 has ended (completed)"),
    ("c", {**RUNNING, "state": "failed", "ended": 2.0}, "`corral run --resume` with the host"),
])
def test_a_join_that_cannot_be_made_is_refused_before_anything_is_touched(
        host: str, record: dict[str, object], said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = _cluster(tmp_path, record)

    async def no_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused join checks nothing")

    monkeypatch.setattr("remote.run.join.check_and_plan", no_check)
    assert main(["-c", str(path), "join", host, "--run", "m-1"]) != 0
    out = capsys.readouterr()
    assert said in out.out + out.err and "Traceback" not in out.out + out.err
    assert read_join_records(local_run_dir(load_cluster(path), "m-1")) == []
    assert not (tmp_path / "work-c").exists()  # nothing pushed


def test_the_join_is_checked_with_the_runs_hosts_now_in_cluster_order(tmp_path: Path) -> None:
    config = load_cluster(_cluster(tmp_path, RUNNING))
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("b", "a"),
                   membership_port=31000)
    assert [h.name for h in join_config(config, info, "c").hosts] == ["a", "b", "c"]
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("a",),
                   left_hosts=("b",), membership_port=31000)  # b left: it may come back
    assert [h.name for h in join_config(config, info, "b").hosts] == ["a", "b"]


def test_a_joiner_runs_its_own_torchrun_and_reaches_the_runs_store_quoted(
        tmp_path: Path) -> None:
    hosts = tuple(HostSection(name=n, address="local", gpus=0, nproc=2) for n in "abc")
    config = joiner_alone(ClusterConfig(
        path=tmp_path / "cluster.toml", hosts=hosts, run=RunSection(steps=1),
        cluster=ClusterSection(name="m", master="a", run_root=str(tmp_path))), "c")
    host = config.hosts[0]
    assert host.name == "c" and [h.name for h in config.hosts] == ["c"]
    odd = "10.0.0.1; touch /tmp/pwned"  # a master address is never shell syntax
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("a", "b"),
                   membership_port=31000, master_addr=odd)
    code = CodeBundle(digest="d" * 64, tar=b"", files=0)
    plan = joiner_plan(info, str(tmp_path / "run dir"), code, "gloo", None)
    place = HostPlan(host=host, node_rank=2, first_rank=2, nproc=2, device="cpu", gpus=0,
                     visible_devices="", interface=None, local_addr=None)
    words = shlex.split(torchrun_command(config, plan, place))
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    assert env[MEMBERSHIP_ADDR_ENV] == odd and env[MEMBERSHIP_PORT_ENV] == "31000"
    assert JOIN_ENV in env
    # a world of its own: never the run's rendezvous, whose agents would restart their ranks
    assert "--standalone" in words and words[words.index("--nnodes") + 1] == "1"
    assert "--rdzv-endpoint" not in words and "--node-rank" not in words
    assert words[words.index("--nproc-per-node") + 1] == "2"


def test_a_join_record_is_written_whole_read_back_and_forgotten(tmp_path: Path) -> None:
    record = JoinRecord(host="c", pgid=4242, asked=12.5)
    path = write_join_record(tmp_path, record)
    assert path == record_path(tmp_path, "c") and not path.with_suffix(".tmp").exists()
    (tmp_path / "joins" / "d.json").write_text("{not json", encoding="utf-8")  # skipped
    assert read_join_records(tmp_path) == [record]
    forget_join_record(tmp_path, "c")
    assert read_join_records(tmp_path) == []


def _tail(run_dir: Path, host: str, planned: str, log: list[str]) -> list[str]:
    """What the host's tailer prints for ``log`` (its launcher log) and ``planned``, once."""
    paths = tailer_paths(host)
    (run_dir / paths["planned"]).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / paths["planned"]).write_text(planned)
    (run_dir / paths["launcher_log"]).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / paths["launcher_log"]).write_text("".join(f"{line}\n" for line in log))
    for rank in (0, 3):
        events = run_dir / paths["events"].format(rank=rank)
        events.parent.mkdir(parents=True, exist_ok=True)
        events.write_text(f'{{"rank": {rank}}}\n')
    out = io.StringIO()
    tailer = tail_script.Tailer({k: str(run_dir / v) for k, v in paths.items()}, {}, out)
    tailer.drain_all()
    tailer.drain_all()  # the owned ranks' files are read after the log that named them
    return out.getvalue().splitlines()


def test_a_joiners_tailer_owns_the_member_its_rank_names_not_torchruns_rank(
        tmp_path: Path) -> None:
    admitted = "[default0]:" + JOINED_LINE.format(member=3)
    rendezvous = "INFO ... global_ranks=[0] role_ranks=[0]"
    said = _tail(tmp_path / "j", "c", f"{tail_script.JOIN_MARK}\n", [rendezvous, admitted])
    assert [line for line in said if line.startswith("O\t")] == ["O\t3"]
    assert any('{"rank": 3}' in line for line in said)
    assert not any('{"rank": 0}' in line for line in said)  # the master's file left alone
    # a host launched with the run: its planned ranks, and a stray line changes nothing
    said = _tail(tmp_path / "r", "b", "0\n", [rendezvous, admitted])
    assert [line for line in said if line.startswith("O\t")] == ["O\t0"]


async def test_a_timed_join_reads_the_event_that_let_the_host_in_from_the_local_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from remote.run import join
    from trainer.run_layout import IN_RUN_DIR, RunLayout

    config = load_cluster(_cluster(tmp_path, RUNNING))
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=1.0, hosts=("a", "b"),
                   membership_port=31000)

    async def launched(config: ClusterConfig, info: RunInfo, host: str) -> JoinRecord:
        return JoinRecord(host=host, pgid=7, asked=100.0)

    monkeypatch.setattr(join, "request_join", launched)
    copy = Path(RunLayout(str(local_run_dir(config, "m-1"))).collected("a"))
    events = copy / IN_RUN_DIR.events(0)
    events.parent.mkdir(parents=True)
    events.write_text("".join(json.dumps(e) + "\n" for e in (
        {"event": "membership", "change": "refused", "hosts": ["c"], "t": 110.0},
        {"event": "membership", "change": "joined", "hosts": ["c"], "t": 112.5,
         "seconds_to_step": 4.0, "state_bytes": 1234,
         "phases": {"check": 5.0, "push": 1.0, "start": 2.5, "admission": 4.0}})))
    figures = await join.join_and_time(config, info, "c", timeout_s=5)
    assert (figures.first_step_s, figures.seconds_to_step, figures.state_bytes) == (
        12.5, 4.0, 1234)
    assert figures.phases == {"check": 5.0, "push": 1.0, "start": 2.5, "admission": 4.0}


@pytest.mark.parametrize(("run", "at"), [
    ("", "at a step boundary"), ('exchange = "local"\n', "at a round's end (an outer step)")])
def test_a_joiner_is_said_to_be_let_in_where_the_runs_mode_admits_it(
        tmp_path: Path, run: str, at: str) -> None:
    config = load_cluster(_cluster(tmp_path, RUNNING, run=run))
    ab = replace(config, hosts=config.hosts[:2])  # the run's hosts; c joins
    state = LoopState(run_id="r", phase=Phase.RUNNING, launching=True, config=ab,
                      followed=RunInfo(run_id="r", cluster="c", state="running", started=1.0,
                                       hosts=("a", "b")), cluster_hosts=config.hosts)
    said = join_launched(state, JoinLaunched(host="c", pgid=7, asked=1.0), t=3.0).events
    assert [e.detail for e in said if isinstance(e, HostStatus)] == [f"launched; let in {at}"]
    [line] = [e.text for e in said if isinstance(e, LogLine)]
    assert line.endswith(f"2.0 s after `corral join`; rank 0 lets it in {at}"), line


def test_a_joiners_lines_are_labelled_with_its_member_id_once_let_in(tmp_path: Path) -> None:
    """On the old code a joiner's every line said ``[rank0+0]:`` (its own world's rank 0):
    ``corral logs`` and every seat showed it as ``HOST:0``, rank 0's label."""
    run_dir = tmp_path / "j"
    log = ["[rank0+0]:loading", "[rank0+0]:" + JOINED_LINE.format(member=3),
           "[rank0+0]:train  10%|#| 1/10\r[rank0+0]:train  20%|##| 2/10"]
    said = _tail(run_dir, "c", f"{tail_script.JOIN_MARK}\n", log)
    texts = [line.split("\t", 3)[3] for line in said if line.startswith("L\t") and "[rank" in line]
    assert texts == ["[rank0+0]:loading", "[rank3+0]:" + JOINED_LINE.format(member=3),
                     "[rank3+0]:train  10%|#| 1/10", "[rank3+0]:train  20%|##| 2/10"]
    # a tailer started past the line that let it in (a reconnect, a later attach) knows it
    paths = tailer_paths("c")
    log_path = str(run_dir / paths["launcher_log"])
    past = (run_dir / paths["launcher_log"]).stat().st_size
    with open(log_path, "a") as f:
        f.write("[rank0+0]:step 2\n")
    out = io.StringIO()
    tailer = tail_script.Tailer({k: str(run_dir / v) for k, v in paths.items()},
                                {log_path: past}, out)
    tailer.recall_members()
    tailer.drain_all()
    assert "\t[rank3+0]:step 2" in out.getvalue()
