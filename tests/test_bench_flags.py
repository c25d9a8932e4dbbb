"""The benchmarks' trainer command lines are ones the trainer accepts, and train what the
benchmark says: simple_cnn on synthetic images, or the causal_lm task on the tiny generated
model (bench/oracle.py --task causal_lm)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench._common import causal_lm_task, trainer_flags
from trainer.settings.train_config import parse_config
from trainer.tasks.loader import task_options


def _config(flags: list[str]):  # type: ignore[no-untyped-def]
    assert flags[:2] == ["-m", "trainer"]
    return parse_config(flags[2:])


def test_image_flags_train_simple_cnn_with_the_given_policy_and_slowdowns(tmp_path) -> None:
    config = _config(trainer_flags(global_batch=64, steps=7, run_dir=tmp_path,
                                   policy="dynamic", slowdown=[1.0, 3.0]))
    assert (config.task, config.model, config.dataset) == ("image", "simple_cnn",
                                                          "synthetic_image")
    assert (config.global_batch, config.steps, config.policy) == (64, 7, "dynamic")
    assert config.slowdown == (1.0, 3.0) and config.threads == 1
    assert config.samples >= 4 * 64


def test_causal_lm_flags_train_the_tiny_generated_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from trainer.tasks.causal_lm import parse_options

    task = causal_lm_task(tmp_path / "lm", seq_len=64, lora_r=4)
    config = _config(trainer_flags(global_batch=16, steps=5, run_dir=tmp_path / "run",
                                   policy="static", slowdown=[1.0, 3.0], task=task))
    assert (config.task, config.global_batch, config.optimizer) == ("causal_lm", 16, "adamw")
    options = parse_options(task_options(config.task_options))  # names and types the task takes
    assert (options.seq_len, options.lora_r, options.lora_alpha) == (64, 4, 8)
    assert (Path(options.model) / "config.json").is_file() and Path(options.data).is_file()
    # A second benchmark in the same folder reuses the files instead of writing them again.
    written = (Path(options.model) / "config.json").stat().st_mtime_ns
    causal_lm_task(tmp_path / "lm", seq_len=64, lora_r=4)
    assert (Path(options.model) / "config.json").stat().st_mtime_ns == written


def test_the_many_hosts_cluster_is_one_corral_accepts(tmp_path: Path) -> None:
    # bench/many_hosts.py writes it for the namespaces it builds; here for 16 unbuilt ones.
    from bench import many_hosts
    from remote.config.read import load_cluster
    from tests.remote import netns

    box = netns.NetnsCluster(prefix="x", root=tmp_path, ctl_netns="x-ctl",
                             client_key=tmp_path / "key", known_hosts=tmp_path / "known_hosts",
                             nodes=[netns.Node(name=f"n{i}", netns=f"x-n{i}",
                                               address=f"10.77.0.{i}", ifname=f"x-{i}")
                                    for i in range(1, 17)])
    box.client_key.write_text("")  # the key is only looked for
    many_hosts.write_cluster(box, 2, many_hosts.STEPS)
    config = load_cluster(tmp_path / "cluster.toml")
    assert [h.name for h in config.hosts] == ["n1", "n2"]
    assert (config.run.steps, config.run.global_batch) == (many_hosts.STEPS, 32)
    many_hosts.write_cluster(box, 16, many_hosts.STOP_STEPS)
    config = load_cluster(tmp_path / "cluster.toml")
    assert len(config.hosts) == 16 and config.run.steps == many_hosts.STOP_STEPS
    assert all(h.nproc == 1 and h.gpus == 0 for h in config.hosts)


def test_the_mixed_cluster_bench_runs_each_case_on_its_model_from_an_equal_split(
        tmp_path: Path) -> None:
    from bench import mixed_cluster

    args = mixed_cluster.parse_args(["--scale", "4"])
    wide, cnn = mixed_cluster.CASES
    configs = []
    for case in (wide, cnn):
        slowdowns = mixed_cluster.scaled(case.slowdowns, args)
        flags = trainer_flags(global_batch=case.global_batch, steps=5, run_dir=tmp_path,
                              policy="dynamic", slowdown=slowdowns, task=case.task)
        configs.append(_config(flags + mixed_cluster.split_flags(case, 3, args)))
    # 1,1,60 on the wide MLP (8.3 M parameters: its exchange outweighs its compute)...
    assert configs[0].task == "examples/tasks/curve.py:build"
    assert task_options(configs[0].task_options)["hidden"] == 2880
    assert configs[0].split == (8, 8, 8) and configs[0].slowdown == (4.0, 4.0, 240.0)
    # ...and 1,1,3 on simple_cnn (its compute outweighs its exchange), every slowdown x4.
    assert configs[1].model == "simple_cnn" and configs[1].split == (32, 32, 32)
    assert configs[1].slowdown == (4.0, 4.0, 12.0) and configs[1].policy == "dynamic"
    runs = mixed_cluster.configurations()
    assert [len(s) for _, _, s in runs] == [2, 3, 2, 3]  # each case after its own pair


def test_the_gpu_mixed_bench_pairs_a_one_gpu_host_with_a_cpu_only_host(tmp_path: Path) -> None:
    import subprocess
    import sys

    import torch

    from bench import gpu_mixed

    args = gpu_mixed.argparse.Namespace(global_batch=512, rebalance_every=10, steps=150,
                                        cpu_ranks=2, cpu_threads=4)
    mixed = gpu_mixed.cluster(tmp_path, args, with_cpu=True)
    alone = gpu_mixed.cluster(tmp_path, args, with_cpu=False)
    assert [(h.name, h.gpus, h.nproc) for h in mixed.hosts] == [("gpu", 1, 1), ("cpu", 0, 2)]
    assert [h.name for h in alone.hosts] == ["gpu"] and mixed.run == alone.run
    assert (mixed.run.model, mixed.run.policy, mixed.run.global_batch) == ("resnet18",
                                                                           "dynamic", 512)
    if not torch.cuda.is_available():  # the bench names what it needs, no traceback
        done = subprocess.run([sys.executable, "bench/gpu_mixed.py"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 2 and "needs a CUDA GPU" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_lowcomm_bench_gives_local_runs_the_exact_runs_samples_at_its_optimizer_steps(
        tmp_path: Path) -> None:
    """bench/lowcomm.py's claim: a local run (two islands) trains the exact run's samples, each
    island on its share of the exact run's batch for as many optimizer steps, evaluated at the
    same samples; ``global`` gives each island the whole batch instead."""
    from bench.lowcomm import NPROC, local_flags, workload_flags

    exact_flags, batch = workload_flags("cnn", tmp_path, quick=True)
    exact = parse_config(exact_flags)
    shared_flags, shared_batch = local_flags(exact_flags, batch, "share")
    shared = parse_config(shared_flags)
    assert shared_batch == shared.global_batch == exact.global_batch // NPROC
    assert shared.steps * shared.global_batch == exact.steps * exact.global_batch  # samples
    assert shared.steps // NPROC == exact.steps  # each island steps as often as exact
    assert shared.eval_every * shared.global_batch == exact.eval_every * exact.global_batch
    assert local_flags(exact_flags, batch, "global") == (exact_flags, batch)


def test_the_lowcomm_bench_runs_each_setting_it_names(tmp_path: Path) -> None:
    """bench/lowcomm.py's modes: ``H<steps>/<compression>[+overlap]`` reach the trainer."""
    from bench.lowcomm import mode_flags, workload_flags

    flags, _ = workload_flags("cnn", tmp_path, quick=True)
    overlapped = parse_config([*flags, *mode_flags("H64/int4+overlap")])
    assert (overlapped.exchange, overlapped.round_steps) == ("local", 64)
    assert (overlapped.outer_compression, overlapped.outer_overlap) == ("int4", True)
    plain = parse_config([*flags, *mode_flags("H8/none")])
    assert (plain.outer_compression, plain.outer_overlap) == ("none", False)
    assert mode_flags("exact") == []


def test_the_lowcomm_bench_runs_every_setting_at_each_outer_step_it_names(tmp_path: Path) -> None:
    """``--outer '1.0,0.0 0.7,0.5'``: each setting at each H again under each outer step,
    labelled with it; without it, the trainer's default outer step, unlabelled."""
    from bench.lowcomm import (
        folder_mode,
        local_modes,
        mode_flags,
        outer_steps,
        parser,
        workload_flags,
    )

    flags, _ = workload_flags("cnn", tmp_path, quick=True)
    default = parse_config([*flags, *mode_flags("H64/int4")])
    averaging = parse_config([*flags, *mode_flags("H64/int4+overlap@1.0,0.0")])
    assert (averaging.outer_lr, averaging.outer_momentum) == (1.0, 0.0)
    assert (averaging.outer_compression, averaging.outer_overlap) == ("int4", True)
    assert (default.outer_lr, default.outer_momentum) != (1.0, 0.0)
    assert local_modes("8,64", "none", None) == ["H8/none", "H64/none"]
    assert local_modes("64", "none,int4", "1.0,0.0 0.7,0.5") == [
        "H64/none@1.0,0.0", "H64/int4@1.0,0.0", "H64/none@0.7,0.5", "H64/int4@0.7,0.5"]
    assert parser().parse_args(["--outer", "1.0,0.0 0.7,0.5"]).outer == "1.0,0.0 0.7,0.5"
    # --recorded reads the mode back from the folder main() ran it in.
    for label, mode in (("lm-192-576-4", "H64/int4+overlap@1.0,0.0"), ("cnn", "H8/none"),
                        ("lm", "exact")):
        assert folder_mode(f"{label}-{mode.replace('/', '-')}-2") == (label, mode)
    for bad in ("1.0", "1.0,x", "0,0.5", "0.7,1.0"):  # named before anything runs
        with pytest.raises(argparse.ArgumentTypeError, match=bad.replace(".", r"\.")):
            outer_steps(bad)


def test_the_step_gap_bench_charges_each_device_gap_to_where_the_host_was() -> None:
    """bench/gpu_step_gap.py's reading of a trace: two steps of 100 us, the device busy 60 us
    of each; the 40 us it idles after each step's work, the host in the step's report, are
    charged to ``report``."""
    from bench.gpu_step_gap import gaps_report

    def span(name: str, cat: str, ts: float, dur: float) -> dict[str, object]:
        return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur}

    trace = {"traceEvents": [
        *(span("corral/step", "user_annotation", t, 62) for t in (0, 100, 200)),
        *(span("corral/share", "user_annotation", t, 60) for t in (0, 100, 200)),
        *(span("corral/report", "user_annotation", t + 62, 38) for t in (0, 100)),
        *(span("conv", "kernel", t + 5, 30) for t in (0, 100, 200)),
        *(span("copy", "gpu_memcpy", t + 35, 30) for t in (0, 100, 200)),
    ]}
    report = gaps_report(trace, "cuda", min_gap_us=5.0)
    assert report["steps"] == 2 and report["step_us"] == 100
    assert report["device_busy_us_per_step"] == 60
    assert report["device_idle_us_per_step"] == 40
    assert report["idle_us_per_step_by_host_phase"] == {"report": 40.0}
    assert report["host_us_per_step_by_phase"]["report"] == 38


def test_membership_bench_trains_what_it_says_and_kills_half_an_interval_past_a_checkpoint(
        tmp_path: Path) -> None:
    """bench/membership.py: both paths' flags (CPU and ``--device cuda``) are the trainer's,
    and its kill lands where a uniformly timed loss does on average: mid-interval."""
    from argparse import Namespace

    from bench.membership import kill_step, training_flags

    for device in ("cpu", "cuda"):
        args = Namespace(workload="cnn", global_batch=48, steps=200, checkpoint_every=50,
                         device=device, backend="gloo", kill_at=75)
        config = parse_config(training_flags(args, tmp_path))
        assert (config.model, config.policy, config.device) == ("simple_cnn", "dynamic", device)
        assert (config.checkpoint_every, config.backend) == (50, "gloo")
    assert [kill_step(args, now) for now in (10, 70, 71, 130)] == [75, 75, 125, 175]
