"""The torch releases corral admits, and every torch API whose shape depends on the release.

The range is declared here once (pyproject.toml's ``torch`` requirement says the same, and a
test holds them equal): ``TORCH_FLOOR`` up to, not including, ``TORCH_BELOW``. CI tests the
releases in ``TESTED_TORCH`` (``scripts/torch_matrix.sh``) besides the pinned one
(``scripts/bootstrap.sh``). The trainer (``check_torch_release`` at rank start) and ``corral
check`` (``remote.checks.torch_versions``) name a host whose torch is outside it.

Code that needs an API that changed between releases goes through a function here, which asks
torch what it has (a keyword in a signature, an attribute) rather than comparing versions. (The
rest of the torch API corral uses, ``torch.amp.GradScaler(device)``, ``torch.load(...,
weights_only=False)``, its distributed calls, is the same on every admitted release.) The
module imports torch only inside those functions: ``corral check`` reads the range on the
master without it.
"""

from __future__ import annotations

import inspect
import re
import shlex
from collections.abc import Callable
from typing import Any

TORCH_FLOOR = "2.6"
"""The oldest torch release corral admits: the floor of the tested range (transformers 5, which
the causal_lm task uses, needs 2.6)."""
TORCH_BELOW = "2.16"
"""The first torch release corral does not admit (not yet tested)."""
TESTED_TORCH = ("2.6.0", "2.15.0")
"""The releases CI tests besides the pinned one: the floor's last patch and the newest."""
TORCH_RANGE = f">={TORCH_FLOOR},<{TORCH_BELOW}"
"""The range as a pip requirement specifier."""


def release_tuple(version: str) -> tuple[int, int]:
    """``"2.11.0+cu130"`` -> ``(2, 11)``: the major and minor release (``(0, 0)`` when the
    version says neither)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def torch_admitted(version: str) -> bool:
    """Is this torch version inside ``TORCH_RANGE``?"""
    return release_tuple(TORCH_FLOOR) <= release_tuple(version) < release_tuple(TORCH_BELOW)


def torch_range_fix(python: str) -> str:
    """The command that installs an admitted torch for ``python``."""
    return f"{shlex.quote(python)} -m pip install {shlex.quote('torch' + TORCH_RANGE)}"


def torch_out_of_range(host: str, version: str, python: str = "python") -> str | None:
    """One line naming the host, its torch, the range and the fix, or None when admitted."""
    if torch_admitted(version):
        return None
    return (f"{host} runs torch {version}, outside the range corral is tested with "
            f"({TORCH_RANGE}): install one inside it on {host} (`{torch_range_fix(python)}`)")


def check_torch_release(host: str) -> None:
    """This process's torch is inside the range, else a usage error naming the fix."""
    import sys

    import torch

    from profiles.user_errors import UsageError

    message = torch_out_of_range(host, torch.__version__, sys.executable)
    if message is not None:
        raise UsageError(message)


def ddp_buffer_options(ddp_init: Callable[..., Any]) -> dict[str, Any]:
    """DistributedDataParallel's keyword that stops it broadcasting buffers at every forward
    (corral syncs them itself, ``BufferSync``): ``forward_sync_buffers=False`` where the
    constructor has it (torch 2.13 on, where ``broadcast_buffers`` is deprecated), else
    ``broadcast_buffers=False``, which also skips DDP's buffer broadcast at wrapping
    (``wrap_ddp`` then broadcasts them itself)."""
    if "forward_sync_buffers" in inspect.signature(ddp_init).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def wrap_ddp(model: Any, device: Any) -> Any:
    """``model`` in DistributedDataParallel with ``ddp_buffer_options``; every rank holds rank
    0's parameters and buffers afterwards (collective: every rank calls it)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    options = ddp_buffer_options(DistributedDataParallel)
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **options)
    if "broadcast_buffers" in options:  # that keyword also skipped DDP's broadcast at wrapping
        for buffer in model.buffers():
            dist.broadcast(buffer.detach(), src=0)
    return ddp


def set_tf32(enabled: bool) -> None:
    """Let float32 matmuls and cuDNN convolutions use TensorFloat-32, or forbid it (IEEE
    float32). torch's default lets cuDNN use it, so fp32 runs call this with False.

    Every getter and context manager torch offers must read the same answer afterwards, user
    code and libraries read them (``torch.backends.cudnn.allow_tf32``,
    ``torch.backends.cudnn.flags(...)``, ``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.get_float32_matmul_precision()``). Newer torch keeps one ``fp32_precision`` per
    backend and operator beside the older flags, and its older getters raise when the two
    disagree: so the older flags are set first (which also sets the newer ones on releases
    that have them), then the newer ones per operator, to ``ieee`` rather than ``none``."""
    import torch

    cuda, cudnn = torch.backends.cuda, _any(torch.backends.cudnn)
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    cuda.matmul.allow_tf32 = enabled
    cudnn.allow_tf32 = enabled
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        value = "tf32" if enabled else "ieee"
        cuda.matmul.fp32_precision = value
        cudnn.conv.fp32_precision = value
        cudnn.rnn.fp32_precision = value


def use_deterministic_convolutions() -> None:
    """cuDNN's deterministic convolution algorithms only, chosen without timing them
    (``torch.backends.cudnn.deterministic``, ``benchmark`` off). Its default algorithms may add
    a weight gradient's parts in any order, so two runs of one seed differ in the last bits;
    a quantised exchange (trainer/lowcomm/compress.py) can turn such a bit into a whole code
    step, so the local exchange asks for these on a GPU."""
    import torch

    cudnn = _any(torch.backends.cudnn)
    cudnn.deterministic = True
    cudnn.benchmark = False


def tf32_enabled() -> bool:
    """May float32 matmuls or cuDNN convolutions use TensorFloat-32 now (torch's own flags)?"""
    import torch

    cuda, cudnn = torch.backends.cuda, _any(torch.backends.cudnn)
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        return "tf32" in (cuda.matmul.fp32_precision, cudnn.conv.fp32_precision)
    return bool(cuda.matmul.allow_tf32 or cudnn.allow_tf32)


def _any(module: object) -> Any:
    """A torch module whose attributes differ by release, unchecked by the type checker."""
    return module
