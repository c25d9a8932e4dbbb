"""Launch plans for mixed clusters: one backend for the whole cluster, decided from the hosts'
checked facts and passed to every rank; each host's ranks on exactly the devices cluster.toml
gives them. GPU facts are fakes (what the pre-flight check would have found)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from remote.checks.plan import ClusterPlan, LaunchFacts, PlanError, plan_cluster
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.config.read import parse_cluster
from remote.run.launch import LaunchPlan, launcher_command
from trainer.settings.train_config import parse_config


def _config(tmp_path: Path, *hosts: HostSection, backend: str = "auto",
            split: tuple[int, ...] | None = None) -> ClusterConfig:
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="mix", master=hosts[0].name),
                         hosts=hosts, run=RunSection(backend=backend, global_batch=64,  # type: ignore[arg-type]
                                                     split=split, steps=2))


def _host(name: str, **kw: object) -> HostSection:
    return HostSection(name=name, address="local", python="python3", **kw)  # type: ignore[arg-type]


def _plan(config: ClusterConfig, gpus: dict[str, int | None]) -> ClusterPlan:
    return plan_cluster(config, LaunchFacts(gpus=gpus, interfaces={}, port=None), "127.0.0.1")


Launched = dict[str, tuple[dict[str, str], list[str]]]


def _launched(config: ClusterConfig, plan: ClusterPlan) -> Launched:
    """Each host's launcher command, split into its environment and the trainer's flags."""
    launch = LaunchPlan(run_id="mix-1", run_dir="/tmp/runs/mix-1", code_digest="0" * 64,
                        master_addr="127.0.0.1", port=29500, nnodes=len(config.hosts),
                        user=None, backend=plan.backend)
    out = {}
    for place in plan.hosts:
        words = shlex.split(launcher_command(config, launch, place).split("; s=$?")[0])
        env = dict(w.split("=", 1) for w in words[1:] if "=" in w and not w.startswith("-"))
        flags = words[words.index("trainer") + 1:]
        out[place.host.name] = (env, flags)
    return out


def _flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_a_gpu_host_and_a_cpu_host_get_gloo_everywhere_and_cpu_on_the_cpu_host(
        tmp_path: Path) -> None:
    config = _config(tmp_path, _host("gpu"), _host("cpu"))
    plan = _plan(config, {"gpu": 2, "cpu": 0})
    assert plan.backend == "gloo"
    by_host = {p.host.name: p for p in plan.hosts}
    assert (by_host["gpu"].device, by_host["gpu"].nproc) == ("cuda", 2)
    assert (by_host["cpu"].device, by_host["cpu"].nproc) == ("cpu", 1)
    launched = _launched(config, plan)
    for _, flags in launched.values():
        assert _flag(flags, "--backend") == "gloo"  # the same explicit backend on every rank
    assert _flag(launched["gpu"][1], "--device") == "cuda"
    assert _flag(launched["cpu"][1], "--device") == "cpu"
    # The flags are the trainer's own: every rank accepts them.
    trainer = parse_config(launched["cpu"][1])
    assert (trainer.backend, trainer.device) == ("gloo", "cpu")


def test_an_all_gpu_cluster_gets_nccl(tmp_path: Path) -> None:
    config = _config(tmp_path, _host("a"), _host("b", gpus=1))
    plan = _plan(config, {"a": 4, "b": 2})
    assert plan.backend == "nccl"
    for _, flags in _launched(config, plan).values():
        assert _flag(flags, "--backend") == "nccl" and _flag(flags, "--device") == "cuda"
    assert [p.nproc for p in plan.hosts] == [4, 1]


def test_gpus_0_on_a_gpu_host_trains_on_the_cpu_with_every_gpu_hidden(tmp_path: Path) -> None:
    config = _config(tmp_path, _host("box", gpus=0, nproc=2), _host("other"))
    plan = _plan(config, {"box": 4, "other": 1})
    box = plan.hosts[0]
    assert (box.device, box.gpus, box.visible_devices) == ("cpu", 0, "")
    env, flags = _launched(config, plan)["box"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and _flag(flags, "--device") == "cpu"
    assert plan.backend == "gloo"


def test_gpus_n_pins_the_first_n_gpus(tmp_path: Path) -> None:
    config = _config(tmp_path, _host("box", gpus=2), _host("own", gpus=1,
                                                             env={"CUDA_VISIBLE_DEVICES": "3"}))
    plan = _plan(config, {"box": 4, "own": 4})
    env = _launched(config, plan)["box"][0]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and plan.hosts[0].nproc == 2
    # A host whose env pins devices itself keeps its own choice: corral sets none over the
    # host's env table (which reaches the launcher on its stdin, not in this command).
    assert "CUDA_VISIBLE_DEVICES" not in _launched(config, plan)["own"][0]


def test_nccl_with_a_host_that_has_no_gpu_is_an_error_naming_the_host(tmp_path: Path) -> None:
    config = _config(tmp_path, _host("gpu"), _host("laptop"), backend="nccl")
    with pytest.raises(PlanError, match="laptop"):
        _plan(config, {"gpu": 1, "laptop": 0})
    assert _plan(_config(tmp_path, _host("gpu"), _host("laptop"), backend="gloo"),
                 {"gpu": 1, "laptop": 0}).backend == "gloo"


def test_ranks_are_numbered_in_host_order_and_each_host_gets_its_base(tmp_path: Path) -> None:
    config = _config(tmp_path, _host("a", nproc=2), _host("b"), _host("c", nproc=3),
                     split=(10, 10, 20, 8, 8, 8))
    plan = _plan(config, {})
    assert [(p.host.name, list(p.ranks)) for p in plan.hosts] == [
        ("a", [0, 1]), ("b", [2]), ("c", [3, 4, 5])]
    assert plan.shares(config.run.split, "b") == (20,)
    assert plan.shares(config.run.split, "c") == (8, 8, 8)
    launched = _launched(config, plan)
    assert [launched[h][0]["CORRAL_RANK_BASE"] for h in "abc"] == ["0", "2", "3"]
    # The teed output prefix names the rank the trainer uses, not torch's node order.
    assert launched["c"][0]["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${local_rank}+3]:"


def test_master_defaults_to_the_first_host(tmp_path: Path) -> None:
    text = ('[cluster]\nname = "c"\n\n[[hosts]]\nname = "first"\naddress = "local"\n\n'
            '[[hosts]]\nname = "second"\naddress = "local"\n')
    config = parse_cluster(text, path=tmp_path / "cluster.toml")
    assert config.cluster.master == "first" and config.master_host.name == "first"


def test_the_check_raises_when_its_module_cannot_be_imported(tmp_path: Path,
                                                              monkeypatch) -> None:
    # A broken install must not pass the pre-flight check with an empty report.
    import asyncio
    import sys

    from remote.run.controller import SshRunController

    controller = SshRunController(_config(tmp_path, _host("a")))
    monkeypatch.setitem(sys.modules, "remote.checks.preflight", None)
    # Whatever module imported it earlier in the session must import it again.
    monkeypatch.delitem(sys.modules, "remote.run.preview", raising=False)
    with pytest.raises(ImportError):
        asyncio.run(controller.check())


def test_precision_auto_is_decided_per_host_from_its_gpus(tmp_path: Path) -> None:
    # An RTX 30-series (bf16), a GTX 10-series (no bf16) and a laptop, as the check found them.
    config = _config(tmp_path, _host("rtx3090"), _host("gtx1080"), _host("laptop"))
    config = ClusterConfig(path=config.path, cluster=config.cluster, hosts=config.hosts,
                           run=RunSection(precision="auto", global_batch=64, steps=2))
    facts = LaunchFacts(gpus={"rtx3090": 1, "gtx1080": 1, "laptop": 0}, interfaces={},
                        port=None, bf16={"rtx3090": (True,), "gtx1080": (False,)})
    plan = plan_cluster(config, facts, "127.0.0.1")
    assert {p.host.name: p.precision for p in plan.hosts} == {
        "rtx3090": "bf16", "gtx1080": "fp16", "laptop": "fp32"}
    launched = _launched(config, plan)
    assert {name: parse_config(flags).precision for name, (_, flags) in launched.items()} == {
        "rtx3090": "bf16", "gtx1080": "fp16", "laptop": "fp32"}
    # Not known (no check ran): each rank decides for its own device.
    unknown = plan_cluster(config, LaunchFacts(gpus={"rtx3090": 1}, interfaces={}, port=None),
                           "127.0.0.1")
    assert unknown.hosts[0].precision == "auto"
    # A precision given explicitly is every host's, whatever its GPUs.
    fixed = ClusterConfig(path=config.path, cluster=config.cluster, hosts=config.hosts,
                          run=RunSection(precision="fp32", global_batch=64, steps=2))
    assert {_flag(flags, "--precision") if "--precision" in flags else "fp32"
            for _, flags in _launched(fixed, plan_cluster(fixed, facts, "127.0.0.1")).values()
            } == {"fp32"}


def test_corral_check_says_what_auto_precision_picks_on_each_host() -> None:
    from remote.checks.preflight import HostFacts
    from remote.checks.torch_versions import judge_precision

    said = {}
    for name, gpus, bf16 in (("rtx3090", 1, [True]), ("gtx1080", 1, [False]),
                             ("laptop", 0, [])):
        facts = HostFacts(gpus=gpus, gpu_names=["gpu"] * gpus, bf16=bf16)
        judge_precision(_host(name), "auto", facts)
        [item] = facts.items
        assert item.ok
        said[name] = item.detail
    assert said == {"rtx3090": "auto: bf16 on the GPU", "gtx1080": "auto: fp16 on the GPU",
                    "laptop": "auto: fp32 on the CPU"}
