"""The forward pass's reduced precision: autocast per ``--precision``."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each reduced ``--precision``."""


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision: autocast on the rank's device, or nothing for fp32 and
    tf32 (float32 arithmetic; TF32 is torch's flag, ``trainer.compat.set_tf32``)."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
