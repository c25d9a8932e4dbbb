"""A join is checked against what the run's launch check found (issue 78): the launch records
each host's torch release, the backend and each host's precision in ``run.json``; ``corral
join`` refuses a joiner that differs, naming what to fix, before anything is pushed or
started, whatever the run's hosts answer now (their ranks run what was installed at launch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.cli import main
from remote.checks.plan import HostPlan, LaunchFacts
from remote.config.cluster import HostSection
from remote.config.read import load_cluster
from remote.events import CheckReport
from remote.hosts.push import CodeBundle
from remote.records.runs import RunInfo, local_run_dir, read_run_info
from remote.run.join import read_join_records
from remote.run.join_match import joiner_mismatch, launch_checked
from remote.run.start import Launch
from tests.remote.test_membership_join import RUNNING
from tests.remote.test_membership_leave import _cluster

RECORDED = {"torch": {"a": "2.5.1", "b": "2.5.1"}, "backend": "gloo",
            "precision": {"a": "fp32", "b": "fp32"}}


def _place(host: str, device: str = "cpu", precision: str = "fp32") -> HostPlan:
    return HostPlan(host=HostSection(name=host, address="local"), node_rank=0, first_rank=0,
                    nproc=1, device=device, gpus=0 if device == "cpu" else 1,  # type: ignore[arg-type]
                    visible_devices=None, interface=None, local_addr=None, precision=precision)


@pytest.mark.parametrize(("checked", "torch", "place", "backend", "said"), [
    (RECORDED, "2.5.1", _place("c"), "gloo", None),
    (RECORDED, "2.4.0", _place("c"), "gloo",
     "c runs torch 2.4.0, but the run's ranks were launched with torch 2.5.1: install "
     "torch==2.5.1 on c"),
    ({**RECORDED, "backend": "nccl"}, "2.5.1", _place("c"), "gloo",
     "the run's ranks talk over nccl, but c's ranks would train on the cpu (gloo)"),
    ({**RECORDED, "precision": {"a": "bf16"}}, "2.5.1", _place("c", "cuda", "fp16"), "gloo",
     "c would compute in fp16, the run's hosts in bf16"),
    ({**RECORDED, "precision": {"a": "auto"}}, "2.5.1", _place("c", "cuda", "fp16"), "gloo",
     None),  # left to each rank at launch: nothing known to compare
    (None, "2.4.0", _place("c"), "nccl", None),  # launched by a corral that kept nothing
    ({"torch": "junk", "backend": 3, "precision": []}, "2.4.0", _place("c"), "gloo", None),
])
def test_a_joiner_is_compared_with_what_the_launch_check_recorded(
        checked: dict[str, object] | None, torch: str, place: HostPlan, backend: str,
        said: str | None) -> None:
    why = joiner_mismatch(checked, "c", torch, place, backend)
    assert (why is None) if said is None else (why is not None and said in why), why


def test_a_launch_records_what_its_check_found_and_the_record_reads_it_back(
        tmp_path: Path) -> None:
    config = load_cluster(_cluster(tmp_path, RUNNING))
    launch = Launch(pool=None, config=config, info=read_run_info(config, "m-1"),  # type: ignore[arg-type]
                    code=CodeBundle(digest="d" * 64, tar=b"", files=0),
                    facts=LaunchFacts(gpus={}, interfaces={}, port=1,
                                      torch={"a": "2.5.1", "b": None, "z": "9"}),
                    places={"a": _place("a"), "b": _place("b")}, backend="gloo")
    checked = launch.facts_recorded()["checked"]
    assert checked == launch_checked({"a": "2.5.1", "b": None, "z": "9"}, launch.places, "gloo")
    assert checked == {"torch": {"a": "2.5.1"}, "backend": "gloo",
                       "precision": {"a": "fp32", "b": "fp32"}}
    run_json = local_run_dir(config, "m-1") / "run.json"
    run_json.write_text(json.dumps({**RUNNING, "checked": checked}), encoding="utf-8")
    assert read_run_info(config, "m-1").checked == checked
    run_json.write_text(json.dumps(RUNNING), encoding="utf-8")  # an older corral's record
    assert read_run_info(config, "m-1").checked is None
    assert RunInfo(run_id="r", cluster="m", state="running", started=1.0,
                   hosts=()).checked is None


def test_a_joiner_with_another_torch_is_refused_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the run's hosts answer 2.4.0 now (upgraded since launch, say): their ranks run 2.5.1
    path = _cluster(tmp_path, {**RUNNING, "checked": RECORDED})
    asked: list[list[str]] = []

    async def checked(config: object, pool: object, **kwargs: object
                      ) -> tuple[CheckReport, LaunchFacts]:
        asked.append([h.name for h in config.hosts])  # type: ignore[attr-defined]
        return CheckReport(items=()), LaunchFacts(
            gpus=dict.fromkeys("abc", 0), interfaces={}, port=1,
            torch=dict.fromkeys("abc", "2.4.0"))

    monkeypatch.setattr("remote.run.join.check_and_plan", checked)
    assert main(["-c", str(path), "join", "c", "--run", "m-1"]) != 0
    out = capsys.readouterr()
    said = " ".join((out.out + out.err).split())
    assert asked == [["a", "b", "c"]]
    assert "c cannot join: c runs torch 2.4.0" in said, said
    assert "install torch==2.5.1 on c" in said and "Traceback" not in said
    assert read_join_records(local_run_dir(load_cluster(path), "m-1")) == []
    assert not (tmp_path / "work-c").exists()  # nothing pushed
