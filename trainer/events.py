"""The trainer's event format: the contract the remote layer and the console read.

Each rank appends one JSON object per line to ``RUN_DIR/metrics/rank-<r>.jsonl``, flushed as
written. Every object has ``"event"`` (its kind), ``"v"`` (the schema version), ``"t"`` (Unix
time, seconds) and ``"rank"``; the kinds are the dataclasses below (``docs/events.md``).
Readers ignore unknown fields and kinds, so adding a field or a kind is backwards compatible;
removing or renaming one bumps ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from profiles.user_errors import CorralError
from trainer.membership.event import MembershipEvent
from trainer.round_event import RoundEvent

SCHEMA_VERSION = 1

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

    @property
    def plain_script(self) -> bool:
        """A user's script without corral's opt-in (``trainer/integrations/plain_events.py``):
        no declared global batch, its loss unread, nothing balanced, its length unknown."""
        return self.task == "script" and not self.global_batch


@dataclass(frozen=True, kw_only=True)
class StepEvent:
    """One optimizer step finished on this rank."""

    kind: ClassVar[str] = "step"
    t: float
    rank: int
    step: int
    """Steps completed so far, counting this one (the first step is 1)."""
    epoch: int
    """Epoch this step's samples came from (0-based)."""
    local_batch: int
    loss: float | None
    """Mean loss over this rank's loss units (images, or target tokens); None where corral
    does not read it (a script without the opt-in: its steps are seen from outside)."""
    compute_s: float
    """Forward + backward time on this rank (emulated slowdown included), without waiting
    for the gradient all-reduce."""
    step_s: float
    """Whole step wall time on this rank: data, compute, all-reduce, optimizer."""
    global_loss: float | None = None
    """Rank 0 only: mean loss over all loss units of the step's ``global_batch`` samples."""
    samples_per_s: float | None = None
    """Written by older runs only (``local_batch / step_s``); new events leave it None, as
    readers derive every throughput from the measurements (figures/metrics.py)."""
    cluster_samples_per_s: float | None = None
    """Written by older runs only (rank 0's ``global_batch / step_s``); derived now."""
    loss_units: int | None = None
    """This rank's loss units in the step: images, or target tokens for a language model."""
    lr: float | None = None
    """The learning rate this step used (the schedule's value)."""
    grad_norm: float | None = None
    """The global gradient norm before clipping (only with ``--clip-grad``)."""
    scaler_skipped: bool = False
    """fp16: the gradient scaler found an inf/NaN gradient and skipped this step (the same on
    every rank). A skipped step is the scaler's normal search for a scale, not divergence."""
    loss_scale: float | None = None
    """fp16: the gradient scaler's scale after this step."""
    passes: int | None = None
    """Forward/backward passes this rank ran (``ceil(local_batch / micro_batch)``)."""
    tokens: int | None = None
    """This rank's compute in tokens in the step, when shares are of tokens (variable-length
    items under a balancing policy), else None: its input tokens, padding included where its
    items are padded to the longest (what the balancer shares out; the target tokens are
    ``loss_units``)."""


@dataclass(frozen=True, kw_only=True)
class CapacityEvent:
    """Rank 0: where the per-rank capacities behind the initial split came from."""

    kind: ClassVar[str] = "capacity"
    t: float
    rank: int
    source: Literal["profile", "warmup", "split"]
    """``profile``: stored profiles; ``warmup``: measured at start; ``split``: the given split."""
    samples_per_s: tuple[float | None, ...]
    """Per-rank solo capacity estimate (samples/s), None where unknown."""
    max_batch: tuple[int | None, ...]
    """Per-rank largest local batch allowed (``--max-batch`` share caps), None for no cap."""
    detail: str = ""
    micro_batch: tuple[int | None, ...] = ()
    """Per-rank largest pass: ``--micro-batch`` lowered to a stored profile's memory cap."""


MEASURE_AFTER_STEPS = 5
"""A rebalance's measured gain (the report's and the console's) is taken over this many steps
after it applies."""


@dataclass(frozen=True, kw_only=True)
class RebalanceEvent:
    """Rank 0: the balancer changed the split; it applies from ``step`` on every rank."""

    kind: ClassVar[str] = "rebalance"
    t: float
    rank: int
    step: int
    """First step (1-based) that runs with the new split."""
    previous: tuple[int, ...]
    split: tuple[int, ...]
    reason: str
    predicted_gain: float
    """Predicted relative reduction of the step's compute time (0.12 = 12 % faster)."""
    times: tuple[float, ...]
    """Measured (smoothed) per-rank compute seconds per step under ``previous``."""
    policy: str
    compute_s: tuple[float, float] | None = None
    """A change of active set (a rank sits out or rejoins): the cost model's compute seconds
    of the step before and after it (``Decision.compute_s``); None for a move of samples."""
    exchange_s: tuple[float, float] | None = None
    """With ``compute_s``: the cost model's exchange seconds of the step before and after."""


@dataclass(frozen=True, kw_only=True)
class ResourceEvent:
    """A periodic resource sample of this rank's device and process (every few seconds)."""

    kind: ClassVar[str] = "resources"
    t: float
    rank: int
    gpu_util: float | None = None
    """GPU (SM) utilisation, percent, from NVML: the part of the last sample period in which a
    kernel ran on the GPU; None on CPU or when NVML cannot tell."""
    gpu_mem_used: int | None = None
    """Bytes in use on this rank's GPU."""
    gpu_mem_total: int | None = None
    cpu_percent: float | None = None
    """This process's CPU use, percent of one core (can exceed 100 with several threads)."""
    rss_bytes: int | None = None
    """This process's resident memory."""
    gpu_peak_allocated: int | None = None
    """The most bytes this rank's tensors have held on its GPU since it started (torch's
    ``max_memory_allocated``); None on CPU."""
    gpu_peak_reserved: int | None = None
    """The most bytes torch's caching allocator has reserved on the GPU for this rank
    (``max_memory_reserved``: what the rank needs of the GPU's memory); None on CPU."""


EVAL_METRICS = ("loss", "accuracy", "perplexity")
"""The metric fields an ``eval`` event has always carried (read from files written before
``metrics``, which holds every metric, these included)."""
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error")
"""Eval metrics whose name contains one of these are best when lowest (others when highest)."""


@dataclass(frozen=True, kw_only=True)
class EvalEvent:
    """Rank 0: the held-out set was evaluated after ``step`` (sharded over the ranks)."""

    kind: ClassVar[str] = "eval"
    t: float
    rank: int
    step: int
    """The step the evaluated parameters come from."""
    samples: int
    """Held-out items evaluated."""
    units: int
    """Loss units among them (images, or target tokens)."""
    loss: float | None
    """Mean held-out loss per unit."""
    accuracy: float | None = None
    """Fraction of correct predictions (classification tasks), else None."""
    perplexity: float | None = None
    """``exp(loss)`` for language models (tasks that count no correct predictions)."""
    eval_s: float = 0.0
    """Wall seconds the evaluation took (from rank 0's view)."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Every metric by name: each sum the task's ``evaluate`` returned divided by the unit
    count (``loss_sum`` as ``loss``, ``correct`` as ``accuracy``), and ``perplexity``. Empty
    in files written before it existed: ``all_metrics`` reads ``loss``, ``accuracy`` and
    ``perplexity`` from their fields then."""

    def all_metrics(self) -> dict[str, float]:
        """Every metric of this evaluation by name (None values left out)."""
        if self.metrics:
            return dict(self.metrics)
        values = {name: getattr(self, name) for name in EVAL_METRICS}
        return {name: float(v) for name, v in values.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class CheckpointEvent:
    """Rank 0 wrote a complete checkpoint."""

    kind: ClassVar[str] = "checkpoint"
    t: float
    rank: int
    step: int
    path: str


@dataclass(frozen=True, kw_only=True)
class SamplesEvent:
    """Rank 0, after the final result is written: greedy generations of the trained model
    from a few held-out prompts (tasks that generate text)."""

    kind: ClassVar[str] = "samples"
    t: float
    rank: int
    step: int
    prompts: tuple[str, ...]
    outputs: tuple[str, ...]
    """The text generated after each prompt (same order)."""


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


TrainerEvent = (
    StartEvent
    | StepEvent
    | CapacityEvent
    | RebalanceEvent
    | ResourceEvent
    | EvalEvent
    | CheckpointEvent
    | RoundEvent
    | SamplesEvent
    | MembershipEvent
    | EndEvent
)

EVENT_TYPES: dict[str, type[Any]] = {cls.kind: cls for cls in get_args(TrainerEvent)}
"""Each kind's dataclass, by its ``event`` name (from ``TrainerEvent``: a kind is listed once)."""
_FIELD_NAMES = {kind: frozenset(f.name for f in dataclasses.fields(cls))
                for kind, cls in EVENT_TYPES.items()}
"""Each kind's field names, read once (a seat's replay parses a whole record)."""


class EventFormatError(CorralError):
    """A line of an events file is not a valid event."""

    title = "bad event line"


def event_to_dict(event: TrainerEvent) -> dict[str, Any]:
    """The JSON object written for ``event`` (``event`` and ``v`` first)."""
    body = dataclasses.asdict(event)
    return {"event": event.kind, "v": SCHEMA_VERSION, **body}


def event_to_json(event: TrainerEvent) -> str:
    """One line of JSON (no newline) for ``event``."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), allow_nan=False)


def event_from_dict(obj: dict[str, Any]) -> TrainerEvent | None:
    """Build the event for a decoded JSON object; None for a kind this reader does not know.

    Unknown fields are ignored; lists become tuples. A known kind with missing or ill-typed
    required fields raises ``EventFormatError``.
    """
    cls = EVENT_TYPES.get(str(obj.get("event")))
    if cls is None:
        return None
    names = _FIELD_NAMES[cls.kind]
    values = {name: tuple(value) if isinstance(value, list) else value
              for name, value in obj.items() if name in names}
    try:
        event: TrainerEvent = cls(**values)
        return event
    except TypeError as exc:
        raise EventFormatError(f"{cls.kind} event is missing fields: {exc}") from None


def parse_event(line: str) -> TrainerEvent | None:
    """Parse one line of an events file; None for an unknown kind or a blank line."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventFormatError(f"not JSON ({exc.msg}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise EventFormatError(f"not a JSON object: {line[:80]!r}")
    return event_from_dict(obj)
