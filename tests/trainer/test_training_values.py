"""Bad training-feature values are refused naming the flag or key, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from trainer_runs import REPO, rank_env, trainer_main

from profiles.user_errors import UsageError
from remote.checks.plan import HostPlan
from remote.config.cluster import ConfigError, HostSection, RunSection
from remote.config.read import parse_cluster
from remote.run.launch import LaunchPlan, trainer_flags
from trainer.settings.train_config import TrainConfig, check_world, parse_config
from trainer.settings.training_checks import check_total_steps


@pytest.mark.parametrize(("flags", "needle"), [
    (["--micro-batch", "0"], "--micro-batch must be >= 1"),
    (["--micro-batch", "4,0"], "--micro-batch must be >= 1"),
    (["--clip-grad", "-1"], "--clip-grad must be > 0"),
    (["--clip-grad", "0"], "--clip-grad must be > 0"),
    (["--steps", "10", "--eval-every", "11"], "--eval-every 11 is larger than the run's --steps"),
    (["--eval-every", "-1"], "--eval-every must be >= 0"),
    (["--eval-samples", "0"], "--eval-samples must be >= 1"),
    (["--warmup-steps", "-2"], "--warmup-steps must be >= 0"),
    (["--steps", "5", "--warmup-steps", "6"], "--warmup-steps 6 is larger"),
    (["--min-lr", "0.5", "--lr", "0.1"], "--min-lr 0.5 is above --lr 0.1"),
    (["--capacity-passes", "0"], "--capacity-passes must be >= 1"),
])
def test_bad_flag_values_name_the_flag(flags: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_config(flags)


def test_micro_batch_per_rank_needs_one_entry_per_rank_and_eval_every_fits_epochs() -> None:
    with pytest.raises(UsageError, match="--micro-batch 4,4,4 has 3 entries"):
        check_world(TrainConfig(micro_batch=(4, 4, 4)), 2)
    check_world(TrainConfig(micro_batch=(4, None)), 2)
    with pytest.raises(UsageError, match="--eval-every 9 is larger than the run's 8 steps"):
        check_total_steps(TrainConfig(eval_every=9), 8)


def test_unknown_precision_exits_2_naming_the_flag_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags, needle in ((["--precision", "fp8"], "--precision: invalid choice: 'fp8'"),
                          (["--micro-batch", "0"], "--micro-batch must be >= 1")):
        code = trainer_main(["--device", "cpu", *flags, "--run-dir", str(tmp_path / "run")],
                            monkeypatch)
        assert code == 2 and needle in capsys.readouterr().err
    # fp16 on a CPU rank is refused by the rank itself, before it joins the group or writes
    # a step: a real rank process.
    proc = subprocess.run([sys.executable, "-m", "trainer", "--device", "cpu", "--precision",
                           "fp16", "--run-dir", str(tmp_path / "run")], cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--precision fp16 needs a GPU" in proc.stderr
    assert "Traceback" not in proc.stderr
    steps = tmp_path / "run" / "metrics" / "rank-0.jsonl"
    assert not steps.exists() or '"event":"step"' not in steps.read_text()


CLUSTER = """\
[cluster]
name = "lab"
master = "a"

[[hosts]]
name = "a"
address = "local"
gpus = 0
"""


@pytest.mark.parametrize(("extra", "needle"), [
    ("[run]\nmicro_batch = 0\n", "[run] micro_batch: must be at least 1, got 0"),
    ('[run]\nprecision = "fp8"\n', '[run] precision: expected one of "fp32", "bf16", "fp16"'),
    ('[run]\nlr_schedule = "cosin"\n', 'did you mean "cosine"'),
    ("[run]\nclip_grad = -1.0\n", "[run] clip_grad: must be greater than 0"),
    ("[run]\nsteps = 10\neval_every = 20\n",
     "[run] eval_every: 20 is larger than the run's steps = 10"),
    ("[run]\neval_samples = 0\n", "[run] eval_samples: must be at least 1"),
    ("[run]\nlr = 0.1\nmin_lr = 0.2\n", "[run] min_lr: 0.2 is above lr"),
    ('[run]\nprecision = "fp16"\n', '[run] precision: "fp16" needs a GPU for every rank'),
    ("micro_batch = 0\n", "micro_batch: must be at least 1, got 0"),
    ('[run]\neval_data = "held_out.txt"\n', "[run] eval_data: is the causal_lm task's held-out"),
])
def test_bad_cluster_toml_values_name_the_key(extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cluster(CLUSTER + extra, path=Path("cluster.toml"))
    assert needle in str(info.value)


def test_run_keys_become_trainer_flags_and_a_host_micro_batch_wins() -> None:
    run = RunSection(micro_batch=16, precision="bf16", lr_schedule="cosine", warmup_steps=5,
                     min_lr=0.001, clip_grad=1.0, eval_every=10, eval_samples=256, steps=100)
    plan = LaunchPlan(run_id="r", run_dir="/tmp/r", code_digest="d", master_addr="127.0.0.1",
                      port=1, nnodes=1, user=None)
    def place(host: HostSection) -> HostPlan:
        return HostPlan(host=host, node_rank=0, first_rank=0, nproc=1, device="cpu", gpus=0,
                        visible_devices=None, interface=None, local_addr=None)

    flags = trainer_flags(run, place(HostSection(name="small", address="local", micro_batch=4)),
                          plan)
    config = parse_config([*flags, "--run-dir", "/tmp/r"])
    assert (config.micro_batch, config.precision, config.lr_schedule) == ((4,), "bf16", "cosine")
    assert (config.warmup_steps, config.min_lr, config.clip_grad) == (5, 0.001, 1.0)
    assert (config.eval_every, config.eval_samples) == (10, 256)
    other = parse_config(trainer_flags(run, place(HostSection(name="b", address="local")), plan))
    assert other.micro_batch == (16,)


def test_corral_check_names_a_precision_the_device_cannot_do() -> None:
    from remote.checks.preflight import HostFacts
    from remote.checks.torch_versions import judge_precision as judge

    cpu_host = HostSection(name="laptop", address="local")
    facts = HostFacts(gpus=0)
    judge(cpu_host, "fp16", facts)
    (item,) = facts.items
    assert not item.ok and "fp16 needs a GPU" in item.detail and 'precision = "fp32"' in item.hint
    old_gpu = HostFacts(gpus=2, gpu_names=["Tesla V100", "Tesla V100"], bf16=[False, False])
    judge(HostSection(name="old", address="local"), "bf16", old_gpu)
    assert not old_gpu.items[0].ok and "Tesla V100 cannot do it" in old_gpu.items[0].detail
    new_gpu = HostFacts(gpus=1, gpu_names=["NVIDIA H100"], bf16=[True])
    judge(HostSection(name="new", address="local"), "bf16", new_gpu)
    assert new_gpu.items[0].ok
    bf16_cpu = HostFacts(gpus=0)
    judge(cpu_host, "bf16", bf16_cpu)
    assert bf16_cpu.items[0].ok and bf16_cpu.items[0].detail == "bf16 on the CPU"


def test_eval_data_is_refused_for_a_task_other_than_causal_lm() -> None:
    with pytest.raises(UsageError, match="--eval-data is the causal_lm task's held-out file"):
        parse_config(["--eval-data", "held_out.txt"])
