"""A rank's life in events: ``start``, ``checkpoint`` and ``end`` (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

EndStatus = Literal["completed", "failed", "interrupted", "diverged", "left"]
"""How a rank ended (``diverged``: loss NaN/inf, no checkpoint after; ``left``: host left)."""


@dataclass(frozen=True, kw_only=True)
class StartEvent:
    """A rank has joined the process group and is about to train."""

    kind: ClassVar[str] = "start"
    t: float
    rank: int
    world_size: int
    local_rank: int
    host: str
    """Hostname of the machine this rank runs on."""
    pid: int
    device: str
    """torch device string: ``"cuda:0"`` or ``"cpu"``."""
    device_name: str
    """Human name: the GPU's name, or the CPU model."""
    backend: str
    """``"nccl"`` or ``"gloo"``: the process group's backend."""
    model: str
    dataset: str
    global_batch: int
    split: tuple[int, ...]
    """Per-rank local batch sizes at the first step (sums to ``global_batch``)."""
    policy: str
    """Balancing policy: ``static``, ``proportional`` or ``dynamic``."""
    step: int
    """Steps already done before this start (0, or the checkpoint's step on resume)."""
    total_steps: int
    """The step the run ends at."""
    steps_per_epoch: int
    threads: int
    """CPU threads this rank uses (``torch.get_num_threads()``)."""
    slowdown: float
    """Emulated slowdown factor (1.0 = none); see ``--slowdown``."""
    resumed_from: str | None = None
    """Checkpoint path this run resumed from, or None."""
    task: str = "image"
    """What is trained: ``image``, ``causal_lm``, a user task ``FILE.py:FUNCTION``, or
    ``script`` (the user's own training script with corral's opt-in)."""
    cores: str = ""
    """The cores this rank runs on, as a cpulist (``"0-3"``)."""
    placement: str = ""
    """Why those cores: pinned (and among how many local ranks, or near its GPU) or not."""
    allocator: str = ""
    """The memory allocator serving this rank: ``tcmalloc``, ``jemalloc``, ``glibc tuned``
    (freed memory kept for the next step) or ``glibc defaults``."""
    precision: str = "fp32"
    """Arithmetic of the forward pass: ``fp32``, ``tf32``, ``bf16`` or ``fp16`` (autocast)."""
    tf32: bool = False
    """Whether float32 matmuls and cuDNN convolutions may use TensorFloat-32 on this rank's GPU
    (torch's flags as it started): corral's loop allows it only with precision ``tf32`` on a
    GPU of compute capability 8.0+; a user's script, as it sets them."""
    micro_batch: int | None = None
    """This rank's largest forward/backward pass (None: the whole share in one pass)."""
    exact: bool = True
    """Whether any split gives the same parameters as one process. corral's own loop always
    is; a user's script is not when its loss averages per rank (see ``exact_note``)."""
    exact_note: str = ""
    """Why the run is not exact (a custom ``compute_loss``, token averaging turned off), or
    empty."""
    exchange: str = "exact"
    """``exact``, or ``local``: APPROXIMATE rounds between islands (docs/lowcomm.md)."""
    state_bytes: int | None = None
    """Bytes of training state this rank holds: parameters, gradients and the optimizer's
    state (under ``shard_state``, of its slice); None: not reported (corral's loop only)."""
    state_budget: int | None = None
    """Bytes of memory this rank may give to training state (its slice is sized by it):
    ``state_budget``, a GPU's free memory or its share of its host's available memory."""

    @property
    def plain_script(self) -> bool:
        """A user's script without corral's opt-in (``trainer/integrations/plain_events.py``):
        no declared global batch, its loss unread, nothing balanced, its length unknown."""
        return self.task == "script" and not self.global_batch


@dataclass(frozen=True, kw_only=True)
class CheckpointEvent:
    """Rank 0 wrote a complete checkpoint."""

    kind: ClassVar[str] = "checkpoint"
    t: float
    rank: int
    step: int
    path: str


@dataclass(frozen=True, kw_only=True)
class EndEvent:
    """This rank stopped training (the last line of its file)."""

    kind: ClassVar[str] = "end"
    t: float
    rank: int
    step: int
    status: EndStatus
    checkpoint: str | None = None
    """Newest checkpoint written by this run, if any."""
    error: str | None = None
    """One-line reason when ``status`` is not ``completed``."""

