"""Live membership at launch: a ``task`` run has live membership by default (nothing written;
issue 78) and gives its ranks the run's membership port, a joiner's also the generation it
joins; a run with ``live_membership = false``, a script run as is and ``outer_overlap`` get
neither (they keep today's restart path), and the start line says which path a lost host
takes."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from remote.checks.plan import LaunchFacts, plan_cluster
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.config.live_membership import membership_refusal, wants_membership_port
from remote.config.read import parse_cluster
from remote.records.runs import RunInfo
from remote.run.decide_members import host_loss_line, hot_path_refusal
from remote.run.launch import LaunchPlan, launcher_command
from trainer.membership.contract import HOST_LOSS_ENV, JOIN_ENV, MEMBERSHIP_PORT_ENV


def _config(tmp_path: Path, **run: object) -> ClusterConfig:
    hosts = (HostSection(name="a", address="local", python="python3"),
             HostSection(name="b", address="local", python="python3"))
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="m", master="a"), hosts=hosts,
                         run=RunSection(global_batch=8, steps=2, **run))  # type: ignore[arg-type]


def _envs(config: ClusterConfig, **plan: object) -> dict[str, dict[str, str]]:
    """Each host's launcher environment (corral's own variables, before the interpreter)."""
    cluster = plan_cluster(config, LaunchFacts(gpus={"a": 0, "b": 0}, interfaces={}, port=1),
                           "127.0.0.1")
    launch = LaunchPlan(run_id="m-1", run_dir="/tmp/runs/m-1", code_digest="0" * 64,
                        master_addr="127.0.0.1", port=29500, nnodes=2, user=None,
                        **plan)  # type: ignore[arg-type]
    out = {}
    for place in cluster.hosts:
        words = shlex.split(launcher_command(config, launch, place).split("; s=$?")[0])
        out[place.host.name] = dict(w.split("=", 1) for w in words
                                    if "=" in w and not w.startswith("-"))
    return out


def test_every_rank_of_a_task_run_gets_the_membership_port_and_no_join(tmp_path: Path) -> None:
    config = _config(tmp_path)  # the defaults: on, with on_host_loss = "stop"
    assert wants_membership_port(config)
    assert not wants_membership_port(_config(tmp_path, live_membership=False))
    for env in _envs(config, membership_port=31234).values():
        assert env[MEMBERSHIP_PORT_ENV] == "31234"
        assert env[HOST_LOSS_ENV] == "stop"  # planned changes live; a loss fails the run
        assert JOIN_ENV not in env
    going_on = _config(tmp_path, on_host_loss="continue")
    assert {e[HOST_LOSS_ENV] for e in _envs(going_on, membership_port=1).values()} == {
        "continue"}


def test_a_joiner_is_launched_with_the_generation_it_joins(tmp_path: Path) -> None:
    envs = _envs(_config(tmp_path), membership_port=31234, join_generation=3)
    assert envs["b"][JOIN_ENV] == "3" and envs["b"][MEMBERSHIP_PORT_ENV] == "31234"


def test_a_script_run_as_is_gets_no_membership_port(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    config = _config(tmp_path, live_membership=True)
    script = replace(config, run=replace(config.run, script="train.py"))
    assert not wants_membership_port(script)
    local = replace(config, run=replace(config.run, exchange="local"))
    assert wants_membership_port(local)  # islands join and leave at a round's end
    overlapped = replace(local, run=replace(local.run, outer_overlap=True))
    assert not wants_membership_port(overlapped)  # an exchange under way crosses the end
    for env in _envs(config).values():  # no port planned: none set
        assert MEMBERSHIP_PORT_ENV not in env


HEAD = ('[cluster]\nname = "m"\n\n[[hosts]]\nname = "a"\naddress = "local"\n\n'
        '[[hosts]]\nname = "b"\naddress = "local"\n\n[run]\nsteps = 2\n')


@pytest.mark.parametrize(("run", "port", "why"), [
    ("", True, None),  # on by default: leave and join; a lost host fails the run
    ("live_membership = false", False, "live_membership = false"),
    ('on_host_loss = "continue"', True, None),  # the hot path by default
    ('on_host_loss = "continue"\nlive_membership = false', False,
     "live_membership = false"),  # the way out: the restart
    ("live_membership = true", True, None),  # leave and join without the hot path
    ('on_host_loss = "stop"\nlive_membership = false', False, "live_membership = false"),
    ('on_host_loss = "continue"\nexchange = "local"\nround_steps = 4', True, None),
    ('on_host_loss = "continue"\nexchange = "local"\nround_steps = 4\nouter_overlap = true',
     False, "outer_overlap = true"),
    ('on_host_loss = "continue"\nlive_membership = true\nexchange = "local"\n'
     "round_steps = 4\nouter_overlap = true", False, "outer_overlap = true"),
    ('on_host_loss = "continue"\nscript = "train.py"', False, "a script run as is"),
    ('on_host_loss = "continue"\nlive_membership = true\nscript = "train.py"', False,
     "a script run as is"),
    # Sharded: a leave and a join re-slice the state live; a loss restarts (line below).
    ('on_host_loss = "continue"\nshard_state = "optimizer"', True, None),
])
def test_a_run_has_a_membership_port_as_cluster_toml_derives_it(
        tmp_path: Path, run: str, port: bool, why: str | None) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    config = parse_cluster(HEAD + run + "\n", path=tmp_path / "cluster.toml")
    assert wants_membership_port(config) is port
    refusal = membership_refusal(config)
    assert (refusal is None) if why is None else (why in (refusal or "")), refusal
    # The start line names the path a lost host takes, from the port the launch got.
    line = host_loss_line(config, 31000 if port else None)
    if 'on_host_loss = "continue"' not in run:
        said = 'a lost host fails the run (on_host_loss = "stop")'
        assert line == (said + "; hosts leave and join live (`corral leave`, `corral join`)"
                        if port else said)
    elif "shard_state" in run:  # its lost slice: the restart, re-sliced on resume
        assert line.startswith("a lost host other than a is dropped and the run restarts")
        assert "sharded state" in line and "corral leave" in line
        info = RunInfo(run_id="r", cluster="m", state="running", started=0.0,
                       hosts=("a", "b"), membership_port=31000)
        assert "restarts from its newest checkpoint" in (hot_path_refusal(config, info, "b")
                                                         or "")
    elif port:
        assert line.startswith("a lost host other than a is left behind by the others in "
                               "their own processes")
    else:
        assert line.startswith("a lost host other than a is dropped and the run restarts")
        assert refusal is not None and refusal in line


@pytest.mark.parametrize("imports", ["from trainer.integrations.ddp import Shares",
                                     "import corral.ddp",
                                     "from trainer.integrations.hf import corral",
                                     "from corral.hf import corral"])
def test_a_script_with_the_ddp_helper_or_hf_opt_in_joins_and_leaves_live_and_restarts_on_a_loss(
        tmp_path: Path, imports: str) -> None:
    (tmp_path / "train.py").write_text(f"{imports}\nprint('hi')\n")
    config = parse_cluster(HEAD + 'on_host_loss = "continue"\nscript = "train.py"\n',
                           path=tmp_path / "cluster.toml")
    assert wants_membership_port(config)  # corral leave / join take it at a step boundary
    info = RunInfo(run_id="m-1", cluster="m", state="running", started=0.0,
                   hosts=("a", "b"), membership_port=31000)
    why = hot_path_refusal(config, info, "b")  # its collectives fail in the script's code
    assert why is not None and "restarts from its own checkpoint" in why
    line = host_loss_line(config, 31000)
    assert "restarts on the others from its own checkpoint" in line and "corral join" in line
