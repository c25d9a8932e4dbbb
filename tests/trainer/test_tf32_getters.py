"""After corral's precision setup (``set_tf32(precision == "tf32")``, as the trainer calls it)
every TF32 getter and context manager torch offers answers, silently and consistently: user code
reads them (a loss that enters ``torch.backends.cudnn.flags(...)``, as transformers' CTC loss
does; inductor reads ``torch.get_float32_matmul_precision()``). Runs on every torch of the
matrix (the floor has only the older flags, newer releases both kinds)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from trainer.compat import set_tf32, tf32_enabled

NEWER_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _cudnn() -> Any:
    return torch.backends.cudnn


@pytest.fixture(autouse=True)
def torch_flags_restored() -> Iterator[None]:
    """Each test leaves torch's process-wide flags as it found them."""
    cudnn, matmul = _cudnn(), torch.backends.cuda.matmul
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32)
    newer = ((matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
             if NEWER_API else None)
    yield
    torch.set_float32_matmul_precision(saved[0])
    cudnn.allow_tf32 = saved[1]
    if newer is not None:
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = newer


def every_getter() -> dict[str, object]:
    """What each of torch's TF32 getters and context managers reads now."""
    cudnn = _cudnn()
    read: dict[str, object] = {
        "cudnn.allow_tf32": cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if NEWER_API:
        read["cuda.matmul.fp32_precision"] = torch.backends.cuda.matmul.fp32_precision
        read["cudnn.conv.fp32_precision"] = cudnn.conv.fp32_precision
        read["cudnn.rnn.fp32_precision"] = cudnn.rnn.fp32_precision
    read["tf32_enabled"] = tf32_enabled()
    with cudnn.flags(enabled=cudnn.enabled, allow_tf32=False):
        read["inside flags(allow_tf32=False)"] = cudnn.allow_tf32
    with cudnn.flags(enabled=cudnn.enabled):  # the context manager's default allows TF32
        read["inside flags()"] = cudnn.allow_tf32
    read["after flags"] = (cudnn.allow_tf32, tf32_enabled(), torch.get_float32_matmul_precision())
    return read


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_every_tf32_getter_answers_silently_after_corral_s_setup(precision: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning fails the test too
        set_tf32(precision == "tf32")
        read = every_getter()
    tf32 = precision == "tf32"
    mode = "tf32" if tf32 else "ieee"
    expected: dict[str, object] = {
        "cudnn.allow_tf32": tf32, "cuda.matmul.allow_tf32": tf32,
        "float32_matmul_precision": "high" if tf32 else "highest",
        "inside flags(allow_tf32=False)": False, "inside flags()": True,
        "after flags": (tf32, tf32, "high" if tf32 else "highest"),
        "tf32_enabled": tf32,
    }
    if NEWER_API:
        expected.update({"cuda.matmul.fp32_precision": mode, "cudnn.conv.fp32_precision": mode,
                         "cudnn.rnn.fp32_precision": mode})
    assert read == expected


def test_switching_back_and_forth_keeps_the_getters_consistent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for enabled in (True, False, True, False):
            set_tf32(enabled)
            read = every_getter()
            assert read["cudnn.allow_tf32"] is enabled and read["tf32_enabled"] is enabled
            assert read["cuda.matmul.allow_tf32"] is enabled
