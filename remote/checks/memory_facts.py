"""Each rank's memory budget for training state, as the check finds it, and whether the run's
state fits (trainer/step/state_fit.py): one ``state memory`` row per host, failed (the run is
refused before anything starts) when a rank cannot hold its state, naming by how much.

A host's probe (its ``memory`` section, ``MEMORY_PROBE``) prints ``MemAvailable`` of
/proc/meminfo, its shell's cgroup limit and usage (v2 ``memory.max``, v1
``memory.limit_in_bytes``) and each GPU's free memory (``nvidia-smi``). A rank's budget:
``state_budget`` of its host when set (GiB), else on a GPU host the free memory of its GPU,
else its share of the host's available memory (the host's ranks share it evenly). What the run
needs comes from the trained parameters' bytes a stored profile of the model recorded (none,
or a task other than the image task's ``model``: nothing is judged; a script run: no row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from remote.checks.plan import devices_for
from remote.config.cluster import ClusterConfig
from remote.events import CheckItem
from trainer.step.state_fit import GIB, gib, optimizer_copies, refusal, state_fit

MEMORY_PROBE = (
    "awk '/^MemAvailable:/ {printf \"available %.0f\\n\", $2 * 1024}' /proc/meminfo 2>/dev/null; "
    "while IFS=: read -r _ mem_ctl mem_path; do case \"$mem_ctl\" in "
    "'') mem_at=\"/sys/fs/cgroup$mem_path\"; [ -r \"$mem_at/memory.max\" ] && "
    "echo \"cgroup $(cat \"$mem_at/memory.max\") $(cat \"$mem_at/memory.current\")\";; "
    "*memory*) mem_at=\"/sys/fs/cgroup/memory$mem_path\"; "
    "[ -r \"$mem_at/memory.limit_in_bytes\" ] && echo \"cgroup "
    "$(cat \"$mem_at/memory.limit_in_bytes\") $(cat \"$mem_at/memory.usage_in_bytes\")\";; "
    "esac; done </proc/self/cgroup 2>/dev/null; "
    "nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits 2>/dev/null "
    "| sed 's/^/gpu_free_mib /'; true")
"""The probe's ``memory`` section (see the module). Its variables are its own (``mem_*``): the
sections share one shell, whose ``c`` and ``cpid`` belong to the rendezvous test."""
NO_LIMIT = 1 << 60
"""cgroup v1 writes a huge number for "no limit"."""


@dataclass(frozen=True, kw_only=True)
class MemoryProbe:
    """What one host's ``memory`` section printed (None: not shown)."""

    available: float | None = None
    """Bytes the host can still allocate: ``MemAvailable``, less where its cgroup leaves less."""
    gpu_free: tuple[float, ...] = ()
    """Each GPU's free bytes, in index order."""


def parse_memory_probe(text: str) -> MemoryProbe:
    """``MEMORY_PROBE``'s output; a line it cannot read is left out."""
    available: float | None = None
    room: float | None = None
    gpus: list[float] = []
    for line in text.splitlines():
        words = line.split()
        try:
            if words[:1] == ["available"] and len(words) == 2:
                available = float(words[1])
            elif words[:1] == ["cgroup"] and len(words) == 3 and words[1].isdigit():
                if int(words[1]) < NO_LIMIT:
                    room = max(0.0, float(words[1]) - float(words[2]))
            elif words[:1] == ["gpu_free_mib"] and len(words) == 2:
                gpus.append(float(words[1]) * 1024 ** 2)
        except ValueError:
            continue
    if room is not None:
        available = room if available is None else min(available, room)
    return MemoryProbe(available=available, gpu_free=tuple(gpus))


def rank_budgets(config: ClusterConfig, nprocs: Mapping[str, int],
                 gpus: Mapping[str, int | None], probes: Mapping[str, MemoryProbe],
                 ) -> list[tuple[str, float]] | None:
    """``(host, bytes)`` per rank in rank order (see the module); None when a host's budget is
    not known."""
    budgets: list[tuple[str, float]] = []
    for host in config.hosts:
        ranks = nprocs[host.name]
        if host.state_budget is not None:
            budgets += [(host.name, host.state_budget * GIB)] * ranks
            continue
        found = probes.get(host.name, MemoryProbe())
        device, used, _ = devices_for(host, gpus.get(host.name))
        if device == "cuda":
            if len(found.gpu_free) < min(used, ranks):
                return None
            budgets += [(host.name, found.gpu_free[i % used]) for i in range(ranks)]
        elif found.available is None:
            return None
        else:
            budgets += [(host.name, found.available / ranks)] * ranks
    return budgets


def memory_items(config: ClusterConfig, nprocs: Mapping[str, int],
                 gpus: Mapping[str, int | None], probes: Mapping[str, MemoryProbe],
                 parameter_bytes: int | None) -> list[CheckItem]:
    """One ``state memory`` row per host: each rank's budget and the state it would hold,
    failed where a rank cannot hold it. Rows are shown when the run shards its state or the
    state does not fit; none when the budgets or the model's size are not known (and the run
    shards: one row saying so)."""
    run = config.run
    if run.script is not None:
        return []  # a script brings its own model, optimizer and state
    if run.task != "image":
        parameter_bytes = None  # the stored profiles measure run.model, not this task's model
    budgets = rank_budgets(config, nprocs, gpus, probes)
    if budgets is None or parameter_bytes is None:
        if run.shard_state == "replicate":
            return []
        lacking = ("each host's free memory" if budgets is None
                   else "the model's size (a stored profile records it: corral profile)")
        return [CheckItem(host="*", name="state memory", ok=True,
                          detail=f"not judged: {lacking} not known")]
    copies = optimizer_copies(run.optimizer, run.momentum)
    fit = state_fit(parameter_bytes, copies, run.shard_state, budgets)
    if fit.fits and run.shard_state == "replicate":
        return []
    shared = [h.name for h in config.hosts
              if nprocs[h.name] > 1 and h.state_budget is None
              and devices_for(h, gpus.get(h.name))[0] == "cpu"]
    why = refusal(parameter_bytes, copies, run.shard_state, budgets, shared)
    rows = []
    for host in config.hosts:
        ranks = [r for r in fit.ranks if r.host == host.name]
        detail = "; ".join(f"rank {r.rank}: {gib(r.state)} of {gib(r.budget)}" for r in ranks)
        short = any(r.short > 0 for r in ranks)
        rows.append(CheckItem(host=host.name, name="state memory", ok=not short, detail=detail,
                              hint=(why or "") if short else ""))
    return rows
