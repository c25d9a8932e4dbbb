"""Every torch corral admits: the range is declared once, the trainer and ``corral check`` name a
torch outside it with the fix, and the version-dependent calls (trainer/compat.py) pick what
each release has. Releases other than the installed one are faked by their signatures."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from profiles.user_errors import UsageError
from remote.checks.host_basics import judge_python
from remote.checks.host_facts import HostFacts
from remote.config.cluster import HostSection
from trainer.compat import (
    TESTED_TORCH,
    TORCH_FLOOR,
    TORCH_RANGE,
    check_torch_release,
    ddp_buffer_options,
    set_tf32,
    tf32_enabled,
    torch_admitted,
)

REPO = Path(__file__).resolve().parents[2]


def ddp_init_before_2_13(self, module, device_ids=None, output_device=None, dim=0,  # type: ignore[no-untyped-def]
                         broadcast_buffers=True, init_sync=True, process_group=None,
                         bucket_cap_mb=None, find_unused_parameters=False):
    """DistributedDataParallel.__init__'s buffer keywords up to torch 2.12 (2.6, 2.11)."""


def ddp_init_from_2_13(self, module, device_ids=None, output_device=None, dim=0,  # type: ignore[no-untyped-def]
                       broadcast_buffers=None, init_sync=True, process_group=None,
                       bucket_cap_mb=None, find_unused_parameters=False,
                       forward_sync_buffers=None):
    """From torch 2.13 (2.13, 2.15): ``forward_sync_buffers``, ``broadcast_buffers``
    deprecated."""


@pytest.mark.parametrize(("release", "ddp_init", "expected"), [
    ("2.6 (the floor)", ddp_init_before_2_13, {"broadcast_buffers": False}),
    ("2.11", ddp_init_before_2_13, {"broadcast_buffers": False}),
    ("2.13", ddp_init_from_2_13, {"forward_sync_buffers": False}),
    ("2.15 (the newest)", ddp_init_from_2_13, {"forward_sync_buffers": False}),
])
def test_ddp_gets_the_buffer_keyword_each_release_has(release: str, ddp_init: object,
                                                      expected: dict[str, bool]) -> None:
    assert ddp_buffer_options(ddp_init) == expected, release  # type: ignore[arg-type]


def test_the_installed_ddp_accepts_the_chosen_keyword() -> None:
    from torch.nn.parallel import DistributedDataParallel

    options = ddp_buffer_options(DistributedDataParallel)
    assert set(options) <= set(inspect.signature(DistributedDataParallel).parameters)


def test_the_range_is_declared_once_and_pyproject_says_the_same() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    [torch_requirement] = [d for d in project["project"]["dependencies"]
                           if re.match(r"torch\b", d)]
    assert torch_requirement.replace(" ", "") == "torch" + TORCH_RANGE
    assert all(torch_admitted(release) for release in TESTED_TORCH)
    assert TESTED_TORCH[0].startswith(TORCH_FLOOR + ".")
    assert torch_admitted(torch.__version__)  # the pinned one


@pytest.mark.parametrize(("version", "admitted"), [
    ("2.3.1", False), ("2.5.1+cu124", False), ("2.6.0", True), ("2.11.0+cu130", True),
    ("2.13.0+cpu", True), ("2.15.0", True), ("2.16.0", False), ("2.16.0.dev20270101", False),
])
def test_releases_inside_and_outside_the_range(version: str, admitted: bool) -> None:
    assert torch_admitted(version) is admitted


def test_a_rank_on_a_torch_outside_the_range_stops_with_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    with pytest.raises(UsageError) as refused:
        check_torch_release("gpu-box")
    line = str(refused.value)
    assert "\n" not in line
    assert "gpu-box runs torch 2.4.1+cu121" in line and TORCH_RANGE in line
    assert f"-m pip install 'torch{TORCH_RANGE}'" in line


def test_the_trainer_refuses_a_torch_outside_the_range_before_anything_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.settings.train_config import TrainConfig
    from trainer.train import train

    monkeypatch.setattr(torch, "__version__", "2.16.1+cu132")
    with pytest.raises(UsageError, match=r"runs torch 2\.16\.1\+cu132, outside the range"):
        train(TrainConfig())  # no rank environment, no process group: refused first


def test_corral_check_fails_a_host_whose_torch_is_outside_the_range() -> None:
    host = HostSection(name="old-gpu", address="local", python="/opt/py/bin/python3")
    facts = HostFacts()
    probe = {"python": "3.11.7", "executable": "/opt/py/bin/python3", "torch": "2.4.1",
             "torch_full": "2.4.1+cu121", "cuda": True, "gpus": 1, "gpu_names": ["Tesla T4"]}
    judge_python(host, json.dumps(probe), 0, facts)
    [torch_item] = [i for i in facts.items if i.name == "torch"]
    assert not torch_item.ok and torch_item.host == "old-gpu"
    assert "2.4.1+cu121" in torch_item.detail and TORCH_RANGE in torch_item.detail
    assert torch_item.hint == ("install one inside it on old-gpu: "
                               f"`/opt/py/bin/python3 -m pip install 'torch{TORCH_RANGE}'`")
    admitted = HostFacts()
    judge_python(host, json.dumps({**probe, "torch": "2.11.0", "torch_full": "2.11.0+cu130"}),
                  0, admitted)
    assert [i.ok for i in admitted.items if i.name == "torch"] == [True]


def test_tf32_flags_are_set_and_read_through_the_release_s_api() -> None:
    before = tf32_enabled()
    try:
        set_tf32(True)
        assert tf32_enabled()
        set_tf32(False)
        assert not tf32_enabled()
        cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
        if hasattr(cudnn_conv, "fp32_precision"):  # newer torch: one setting per backend
            assert (torch.backends.cuda.matmul.fp32_precision, cudnn_conv.fp32_precision) == (
                "ieee", "ieee")
        else:
            assert not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    finally:
        set_tf32(before)
