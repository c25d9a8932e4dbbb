"""The run settings the trainer and cluster.toml share: every choice set, default, bound and
meaning is written here once.

``RunSettings`` holds the settings a user writes under cluster.toml's ``[run]`` and the trainer
reads as flags. ``trainer.settings.train_config.TrainConfig`` extends it with the per-host and
per-rank ones; ``remote``'s ``RunSection`` extends it with what only corral's side uses. The
docstring under each field is its ``--help`` text and its line in docs/cluster-toml.md; a
field's metadata (``setting(...)``) names its ``--help`` group and its bounds, which the trainer
checks in ``TrainConfig`` and the cluster.toml rules check in ``[run]``. The ``python -m
trainer`` parser and the launch flags are generated from the fields
(``trainer.settings.flags``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Model = Literal["simple_cnn", "resnet18", "resnet50"]
DatasetName = Literal["synthetic_image", "cifar10", "cifar100"]
Policy = Literal["static", "proportional", "dynamic"]
Optimizer = Literal["sgd", "adamw"]
Norm = Literal["auto", "batch", "syncbatch", "group"]
Backend = Literal["auto", "gloo", "nccl"]
Device = Literal["auto", "cpu", "cuda"]
Prefetch = Literal["auto", "on", "off"]
Precision = Literal["fp32", "bf16", "fp16", "tf32", "auto"]
LrSchedule = Literal["constant", "cosine", "linear"]
Exchange = Literal["exact", "local"]
OuterCompression = Literal["none", "int8", "int4"]
ShardState = Literal["replicate", "optimizer", "gradients"]

MODELS: tuple[Model, ...] = get_args(Model)
DATASETS: tuple[DatasetName, ...] = get_args(DatasetName)
POLICIES: tuple[Policy, ...] = get_args(Policy)
"""How the split is chosen and changed (``--policy``, ``[run] policy``, ``corral run
--policy``, the console's policy key)."""
DATASETS_ON_DISK: tuple[DatasetName, ...] = ("cifar10", "cifar100")
"""Datasets read from ``data_dir`` on every host (the others are generated)."""
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def auto_precision(device_type: str, bf16_capable: bool) -> Precision:
    """What ``precision = "auto"`` means on one device: bf16 where it computes in bf16, fp16
    (with a loss scaler) on an older GPU, fp32 on the CPU (where autocast gains little)."""
    if device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_capable else "fp16"


def device_precision(requested: Precision, device_type: str, ampere: bool) -> Precision:
    """The precision a device computes in for ``requested``: ``auto`` decided
    (``auto_precision``), ``tf32`` only on a GPU of compute capability 8.0+ (Ampere on, where
    bf16 also is) and fp32 elsewhere, as a CPU or an older GPU has no TF32 units; any other
    value itself."""
    if requested == "auto":
        return auto_precision(device_type, ampere)
    if requested == "tf32" and not (device_type == "cuda" and ampere):
        return "fp32"
    return requested


TASK = "task, model and data"
BATCH = "batch and balancing"
OPTIMISATION = "optimisation"
CHECKPOINTS = "run directory and checkpoints"
DEVICES = "devices and emulation"
MEMORY = "memory and precision"
SCHEDULE = "learning-rate schedule and clipping"
EVALUATION = "evaluation"
EXCHANGE = "exchange between hosts (exact or low-communication)"
"""The ``python -m trainer --help`` groups, in the order they first appear."""
OUTER_LR_MAX = 10.0
"""The largest ``outer_lr``: the outer step moves the parameters by it times the islands'
averaged change (1 with no momentum: plain averaging; DiLoCo's 0.7 with Nesterov 0.9 is about
7 times in a steady state); far beyond, the first round's step leaves every trained value
(1e300: infinite parameters) and the run fails after launch."""


def setting(group: str, *, at_least: float | None = None, above: float | None = None,
            flag: str | None = None, metavar: str | None = None,
            text: bool | None = None) -> dict[str, Any]:
    """A field's metadata: its ``--help`` group, its bounds (``at_least``: value >= it;
    ``above``: value > it; for a tuple, each entry that is not None), whether cluster.toml
    holds it to non-empty printable ``text``, and, where the field's name does not make them,
    its flag and metavar."""
    meta: dict[str, Any] = {"group": group}
    for key, value in (("at_least", at_least), ("above", above), ("flag", flag),
                       ("metavar", metavar), ("text", text)):
        if value is not None:
            meta[key] = value
    return meta


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The settings of a run that ``[run]`` and the trainer's flags share."""

    task: str = field(default="image", metadata=setting(TASK, metavar="TASK"))
    """What to train: ``image`` (a network on an image dataset), ``causal_lm`` (LoRA
    fine-tuning of a Hugging Face causal LM) or a user file ``FILE.py:FUNCTION`` (in
    cluster.toml relative to its folder; docs/tasks.md)."""
    model: Model = field(default="simple_cnn", metadata=setting(TASK))
    """Image task: network to train."""
    dataset: DatasetName = field(default="synthetic_image", metadata=setting(TASK))
    """Image task: training data; synthetic images are generated from the seed on every
    host."""
    data_dir: str | None = field(default=None, metadata=setting(TASK, metavar="DIR",
                                                                text=True))
    """Directory on every host holding the CIFAR python-pickle batches (required for cifar10
    and cifar100)."""
    samples: int = field(default=4096, metadata=setting(TASK, at_least=1))
    """Size of the synthetic dataset (at least ``global_batch``)."""
    global_batch: int = field(default=64, metadata=setting(BATCH, at_least=1, metavar="B"))
    """Samples per optimizer step over all ranks together; at least one per rank."""
    split: tuple[int, ...] | None = field(default=None, metadata=setting(BATCH))
    """Initial per-rank shares, one per rank in host order, summing to ``global_batch``. Not
    set: equal for ``static``; measured capacities (a profile or a warm-up) for the others."""
    policy: Policy = field(default="static", metadata=setting(BATCH))
    """How the split is chosen and changed: ``static`` keeps it, ``proportional`` sets it
    from measured capacity, ``dynamic`` also re-solves it from measured compute times."""
    rebalance_every: int = field(default=10, metadata=setting(BATCH, at_least=1))
    """Steps between rebalancing decisions (dynamic policy)."""
    steps: int | None = field(default=None, metadata=setting(OPTIMISATION, at_least=1))
    """The run's total number of optimizer steps (a resumed run continues up to it); give
    ``steps`` or ``epochs``, not both."""
    epochs: int | None = field(default=None, metadata=setting(OPTIMISATION, at_least=1))
    """The run's total number of epochs; 1 when neither ``steps`` nor ``epochs`` is given."""
    lr: float = field(default=0.05, metadata=setting(OPTIMISATION, above=0))
    """Learning rate (greater than 0)."""
    optimizer: Optimizer = field(default="sgd", metadata=setting(OPTIMISATION))
    """``sgd`` (torch.optim.SGD: ``momentum``, ``nesterov``) or ``adamw`` (torch.optim.AdamW:
    ``betas``, ``eps``); both take ``weight_decay``."""
    momentum: float = field(default=0.0, metadata=setting(OPTIMISATION, at_least=0))
    """SGD: momentum factor (0 = plain SGD)."""
    nesterov: bool = field(default=False, metadata=setting(OPTIMISATION))
    """SGD: Nesterov momentum (needs ``momentum`` above 0)."""
    weight_decay: float = field(default=0.0, metadata=setting(OPTIMISATION, at_least=0))
    """Weight decay: L2 added to the gradient for SGD, decoupled for AdamW."""
    betas: tuple[float, ...] = field(default=(0.9, 0.999),
                                     metadata=setting(OPTIMISATION, at_least=0, metavar="B1,B2"))
    """AdamW: the two averaging coefficients, each in [0, 1)."""
    eps: float = field(default=1e-8, metadata=setting(OPTIMISATION, above=0))
    """AdamW: term added to the denominator (greater than 0)."""
    seed: int = field(default=0, metadata=setting(OPTIMISATION, at_least=0))
    """Seed for the weights, the synthetic data and the per-epoch sample order."""
    checkpoint_every: int = field(default=50, metadata=setting(CHECKPOINTS, at_least=0))
    """Rank 0 writes a checkpoint every this many steps (0 = only at the end)."""
    backend: Backend = field(default="auto", metadata=setting(DEVICES))
    """Process-group backend; ``auto`` = nccl when every rank has a GPU, else gloo."""
    precision: Precision = field(default="fp32", metadata=setting(MEMORY))
    """Arithmetic of the forward pass: fp32 (IEEE float32 throughout: TensorFloat-32 off for
    matmuls and cuDNN), or autocast to bf16 (CPUs, recent GPUs) or fp16 (GPUs only, with a
    gradient scaler); ``tf32`` is fp32 whose matmuls and convolutions may use TensorFloat-32:
    fast on GPUs of compute capability 8.0+ (Ampere on) but not split-exact beyond about 1e-4,
    and plain fp32 on the CPU and older GPUs (which lack it); ``auto`` decides per host: bf16
    on GPUs that support it, fp16 on older GPUs, fp32 on the CPU."""
    shard_state: ShardState = field(default="replicate", metadata=setting(MEMORY))
    """Training state held per rank (exact exchange): ``replicate`` = every rank holds all of
    it (DDP); ``optimizer`` (ZeRO stage 1) = the optimizer's state is split across the ranks in
    contiguous slices of the flattened parameters sized by each rank's memory budget (a GPU's
    free memory, a CPU rank's share of its host's available memory, or ``state_budget``), each
    rank updating its slice; ``gradients`` (stage 2) = the same, and the gradient too: the
    backward reduces each bucket to its owners and frees it, so each rank holds only its slice
    of the gradient. Parameters stay replicated; any split of the batch and of the state
    gives one process's parameters. ``corral check`` shows each rank's budget against the
    state it would hold and refuses a run that cannot fit (docs/trainer.md "Sharded state")."""
    lr_schedule: LrSchedule = field(default="constant", metadata=setting(SCHEDULE))
    """How the learning rate goes from ``lr`` to ``min_lr`` after the warm-up."""
    warmup_steps: int = field(default=0, metadata=setting(SCHEDULE, at_least=0))
    """Learning-rate warm-up: the first this many steps rise linearly to ``lr``."""
    min_lr: float = field(default=0.0, metadata=setting(SCHEDULE, at_least=0))
    """The learning rate of the last step (cosine, linear); at most ``lr``."""
    clip_grad: float | None = field(default=None, metadata=setting(SCHEDULE, above=0,
                                                                    metavar="NORM"))
    """Largest global gradient norm (over the all-reduced gradient); not set: no
    clipping."""
    eval_every: int = field(default=0, metadata=setting(EVALUATION, at_least=0))
    """Evaluate the held-out set every this many steps and after the last (0 = never)."""
    eval_samples: int | None = field(default=None, metadata=setting(EVALUATION, at_least=1))
    """Held-out items to evaluate; not set: the task's whole eval set (synthetic images:
    512 generated)."""
    eval_data: str | None = field(default=None, metadata=setting(EVALUATION, metavar="FILE"))
    """causal_lm: a held-out .txt/.jsonl file (on every host) in the data's format; or the
    task option ``eval_fraction`` holds out the end of the training text."""
    exchange: Exchange = field(default="exact", metadata=setting(EXCHANGE))
    """``exact``: every step all-reduces the gradient over every rank (any split gives the
    parameters of one process). ``local`` (APPROXIMATE, docs/lowcomm.md): each island (the
    ranks of one host, exactly data-parallel among themselves) trains ``round_steps`` inner
    steps on its own batches with the run's optimizer, then the islands average their
    parameter changes weighted by the samples each consumed and take one outer step (SGD with
    Nesterov momentum): one exchange of the parameters per round instead of one per step."""
    round_steps: int | None = field(default=None, metadata=setting(EXCHANGE, at_least=1,
                                                                    metavar="H"))
    """``local``: inner steps per island per round on average (islands of unequal speed get
    steps in proportion to it, so they finish together); the round then consumes
    ``round_steps`` x islands global batches. Not set: chosen after a first round of 4 (its
    exchange waited for) so that the exchange takes, or with ``outer_overlap`` leaves exposed,
    at most ``round_exchange`` of a round."""
    round_exchange: float = field(default=0.05, metadata=setting(EXCHANGE, above=0))
    """``local`` with ``round_steps`` not set: the largest fraction of a round its exchange
    may take (the round is made long enough, planned for 80 % of it so that a round's noise
    stays within it); below 1."""
    outer_lr: float = field(default=0.7, metadata=setting(EXCHANGE, above=0))
    """``local``: learning rate of the outer step on the averaged parameter change; at most
    10 (``OUTER_LR_MAX``)."""
    outer_momentum: float = field(default=0.5, metadata=setting(EXCHANGE, at_least=0))
    """``local``: Nesterov momentum of the outer step (0 = plain averaging, scaled by
    ``outer_lr``); below 1. 0.5, not DiLoCo's 0.9, which overshot on runs of a dozen rounds
    (docs/lowcomm.md "What it costs in quality")."""
    outer_compression: OuterCompression = field(default="int8", metadata=setting(EXCHANGE))
    """``local``: what the islands send each round: ``none`` (float32 changes, one
    all-reduce), ``int8`` or ``int4`` (8 or 4 bits a value with one scale per 256 values and
    error feedback, one all-gather: about 4x or 8x fewer bytes; docs/lowcomm.md gives each
    one's measured quality cost)."""
    outer_overlap: bool = field(default=False, metadata=setting(EXCHANGE))
    """``local``: run each round's exchange while the islands compute the next round, each
    island starting it from an eager estimate (its own change now, the others' of the round
    before) corrected when the average arrives; the round-length rule then counts only the
    exchange time left exposed."""
