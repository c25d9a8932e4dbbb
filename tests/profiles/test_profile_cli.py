"""`python -m trainer.profile_model`: benchmark a real model, print it, store it for the trainer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from profiles.store import ProfileKey, find_profile
from trainer.profile_model import main

FAST = ["--model", "simple_cnn", "--device", "cpu", "--threads", "1", "--batches", "2,16",
        "--warmup", "1", "--repeats", "2"]


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_json_profile_is_saved_where_the_trainer_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*FAST, "--slowdown", "2", "--json", "--save", "--store", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batches"] == [2, 16] and data["threads"] == 1 and data["slowdown"] == 2.0
    assert data["c"] >= 0 and data["a"] >= 0 and len(data["samples_per_s"]) == 2
    assert Path(data["saved_to"]).is_file()
    found, reason = find_profile(
        ProfileKey(host=data["host"], device_name=data["device_name"], model="simple_cnn",
                   torch_version=torch.__version__, threads=1, slowdown=2.0), root=tmp_path,
        precision="fp32", unlabelled_ok=False)  # as the trainer looks up an fp32 run's
    assert found is not None and found.to_dict().items() <= data.items(), reason
    assert data["precision"] == "fp32"  # measured as an fp32 run computes: TF32 off
    # What each step's gradient exchange carries, for the pre-run estimate: fp32 parameters.
    from trainer.profile_model import NUM_CLASSES
    from trainer.tasks.image.models import build_model

    model = build_model("simple_cnn", num_classes=NUM_CLASSES, norm="batch")
    assert found.gradient_bytes == 4 * sum(p.numel() for p in model.parameters())


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FAST, "--no-max-batch"]) == 0
    out = capsys.readouterr().out
    assert "simple_cnn" in out and "fit: t(b) =" in out and "max batch: unknown" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--device", "gpu"], "--device"), (["--model", "vgg"], "vgg"),
     (["--device", "cuda:0"], "CUDA")],
)
def test_bad_input_exits_2_with_the_flag_named(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    assert main([*FAST, *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--batches", "8,x"], ["--batches", "0"],
                                  ["--slowdown", "0.5"], ["--threads", "0"]])
def test_bad_flags_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*FAST, *args])
    assert exited.value.code == 2
    assert args[0] in capsys.readouterr().err
