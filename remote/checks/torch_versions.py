"""``corral check`` items about torch: the answer of the probe that asks a host its Python and
torch (``remote.hosts.interpreter.TORCH_PROBE_PY``), one version on every host, and whether
each host's ranks can compute in the run's ``[run] precision``."""

from __future__ import annotations

from remote.checks.host_facts import HostFacts
from remote.config.cluster import HostSection
from remote.events import CheckItem
from trainer.settings.run_settings import auto_precision


def judge_precision(host: HostSection, precision: str, facts: HostFacts) -> None:
    """Can the host's ranks compute in ``[run] precision``? (fp16: a GPU; bf16: a CPU, or GPUs
    of compute capability 8.0+.) Nothing to say for fp32 or when torch did not answer."""
    if precision == "fp32" or facts.gpus is None:
        return
    on_gpu = bool(facts.gpus) and host.gpus != 0
    where = "GPU" if on_gpu else "CPU"
    if precision == "auto":
        chosen = auto_precision("cuda" if on_gpu else "cpu", all(facts.bf16))
        facts.items.append(_item(host, "precision", True, f"auto: {chosen} on the {where}"))
        return
    fix = 'set precision = "fp32" (or "{}") in the [run] section of cluster.toml'
    if precision == "fp16" and not on_gpu:
        facts.items.append(_item(host, "precision", False,
                                 f"fp16 needs a GPU (its gradient scaler); {host.name}'s ranks "
                                 "run on the CPU", fix.format("bf16")))
        return
    lacking = sorted({n for n, ok in zip(facts.gpu_names, facts.bf16, strict=False) if not ok})
    if precision == "bf16" and on_gpu and lacking:
        facts.items.append(_item(host, "precision", False,
                                 f"bf16 needs compute capability 8.0+; {', '.join(lacking)} "
                                 "cannot do it", fix.format("fp16")))
        return
    facts.items.append(_item(host, "precision", True, f"{precision} on the {where}"))


def _item(host: HostSection | str, name: str, ok: bool, detail: str, hint: str = "") -> CheckItem:
    return CheckItem(host=host if isinstance(host, str) else host.name, name=name, ok=ok,
                     detail=detail, hint=hint)


def torch_item(facts: dict[str, HostFacts]) -> CheckItem | None:
    """All reachable hosts run one torch version (cluster-wide item, host ``*``)."""
    versions: dict[str, list[str]] = {}
    for name, host_facts in facts.items():
        if host_facts.torch is not None:
            versions.setdefault(host_facts.torch, []).append(name)
    if len(versions) <= 1:
        return None if not versions else _item("*", "torch", True, f"{next(iter(versions))} "
                                               "on every reachable host")
    detail = "; ".join(f"{v} on {', '.join(hosts)}" for v, hosts in sorted(versions.items()))
    common = max(versions, key=lambda v: len(versions[v]))
    return _item("*", "torch", False, f"torch versions differ: {detail}",
                 f"install torch=={common} on every host (`<python> -m pip install "
                 f"torch=={common}`)")
