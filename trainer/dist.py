"""Device, backend and process-group helpers (torch.distributed does all the communicating).

The rank layout comes from torch's launcher: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, except
that corral's launch numbers the ranks in cluster.toml's host order: it gives each host's ranks
their first global rank in ``CORRAL_RANK_BASE`` (torch's static rendezvous numbers the master's
node 0, not as the user listed the hosts), so the rank is ``CORRAL_RANK_BASE + LOCAL_RANK``; torch's
process group takes any numbering of its members. The backend every rank passes must agree
before the group exists: corral's launch passes the one it chose for the cluster explicitly.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from profiles import host
from profiles.user_errors import UsageError
from trainer.launch_contract import RANK_BASE_ENV


@dataclass(frozen=True, kw_only=True)
class RankInfo:
    """Where this process sits in the run (from torchrun's environment)."""

    rank: int
    """Global rank."""
    world_size: int
    local_rank: int
    """Rank among the processes on this host."""


def rank_info() -> RankInfo:
    """Read the launcher's environment; a lone ``python -m trainer`` is rank 0 of 1.

    With ``CORRAL_RANK_BASE`` the rank is that base plus the local rank, and ``RANK`` is set
    to it for everything else that reads the environment.
    """
    try:
        info = RankInfo(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
        base = os.environ.get(RANK_BASE_ENV)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (set by torchrun)") from None
    if base is None:
        return info
    if not base.isdigit() or int(base) + local_world > info.world_size:
        raise UsageError(f"{RANK_BASE_ENV}={base!r} does not fit a host of {local_world} "
                         f"rank(s) in a world of {info.world_size} (set by corral's launch)")
    rank = int(base) + info.local_rank
    os.environ["RANK"] = str(rank)
    return RankInfo(rank=rank, world_size=info.world_size, local_rank=info.local_rank)


def choose_device(requested: str, local_rank: int) -> torch.device:
    """``cuda:<local_rank mod GPUs>`` when CUDA is wanted and present, else the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "cuda":
        raise UsageError("--device cuda, but torch sees no CUDA GPU on this host")
    return torch.device("cpu")


def choose_backend(requested: str, device: torch.device) -> str:
    """The process-group backend.

    ``auto`` picks nccl when this rank runs on CUDA, else gloo. That is a local decision, right
    only for a lone host: corral's launch decides the backend for the whole cluster (gloo as
    soon as one host trains on the CPU, because NCCL cannot include a CPU rank) and passes it
    to every rank explicitly.
    """
    if requested == "nccl" and device.type != "cuda":
        raise UsageError("--backend nccl needs every rank on a CUDA GPU; use gloo here")
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(backend: str, device: torch.device, info: RankInfo) -> None:
    """Join the run's process group (torchrun's env:// rendezvous)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "MASTER_ADDR" not in os.environ:
        # A lone `python -m trainer` (no launcher): a one-rank group on this machine.
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(
        backend=backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(minutes=30),
        device_id=device if backend == "nccl" else None,
    )


def destroy_process_group() -> None:
    """Leave the process group if one exists (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def on_any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on some rank; this rank's own without a process group. One
    collective: every rank calls it at the same point."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    return any(row[0] > 0 for row in all_gather_floats([float(flag)], device))


def all_gather_floats(values: Sequence[float], device: torch.device) -> list[list[float]]:
    """Every rank's ``values`` (same length on all ranks), indexed by rank: one collective."""
    return start_all_gather_floats(values, device)()


def start_all_gather_floats(
    values: Sequence[float], device: torch.device
) -> Callable[[], list[list[float]]]:
    """Start ``all_gather_floats`` in the background; call the result to wait for it (one
    host read of every rank's values). The values enter the device through fill kernels: a
    copy from the host would wait for the device first."""
    mine = torch.stack([torch.full((), float(v), dtype=torch.float64, device=device)
                        for v in values])
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    work = dist.all_gather(out, mine, async_op=True)

    def wait() -> list[list[float]]:
        if work is not None:
            work.wait()
        return torch.stack(out).tolist()

    return wait


def broadcast_ints(values: Sequence[int], device: torch.device, src: int = 0) -> tuple[int, ...]:
    """Rank ``src``'s ``values`` on every rank (every rank passes a list of the same length).
    Alone in the world, the values themselves: no copy to the device and back."""
    if dist.get_world_size() == 1:
        return tuple(int(v) for v in values)
    t = torch.tensor(list(values), dtype=torch.int64, device=device)
    dist.broadcast(t, src=src)
    return tuple(int(v) for v in t.tolist())


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return host.cpu_model() or "unknown CPU"


def warn(*args: object) -> None:
    """print() on stderr on every rank: a rank's own warning or error. Each rank's voice
    reaches the run's log (the console and ``corral logs`` fold the same line of several
    ranks into one), where ``print0`` speaks for the run once."""
    print(*args, file=sys.stderr, flush=True)


def print0(*args: object, rank: int | None = None) -> None:
    """print() on global rank 0 only (the rank is read from the environment when not given)."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0") or 0)
    if rank == 0:
        print(*args, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
