"""``corral check`` items about torch: the answer of the probe that asks a host its Python and
torch (``remote.hosts.interpreter.TORCH_PROBE_PY``), a release inside the range corral is
tested with (``trainer.compat``), one version on every host, and whether each host's ranks can
compute in the run's ``[run] precision`` (and whether TF32 is on)."""

from __future__ import annotations

from remote.checks.host_facts import HostFacts
from remote.config.cluster import HostSection
from remote.events import CheckItem
from trainer.compat import TORCH_RANGE, torch_admitted, torch_range_fix
from trainer.settings.run_settings import Precision, device_precision


def torch_release_item(host: HostSection, version: str, python: str) -> CheckItem:
    """The host's torch (its full version), failed when outside ``trainer.compat``'s range."""
    if torch_admitted(version):
        return _item(host, "torch", True, version)
    return _item(host, "torch", False,
                 f"torch {version} is outside the range corral is tested with ({TORCH_RANGE})",
                 f"install one inside it on {host.name}: `{torch_range_fix(python)}`")


def judge_precision(host: HostSection, precision: Precision, facts: HostFacts) -> None:
    """Can the host's ranks compute in ``[run] precision``? (fp16: a GPU; bf16: a CPU, or GPUs
    of compute capability 8.0+; tf32 is used on such GPUs, fp32 elsewhere.) On GPUs it says
    whether TF32 is on. Nothing to say for fp32 on the CPU or when torch did not answer."""
    on_gpu = bool(facts.gpus) and host.gpus != 0
    if (precision == "fp32" and not on_gpu) or facts.gpus is None:
        return
    where = "GPU" if on_gpu else "CPU"
    if precision in ("auto", "tf32"):
        chosen = device_precision(precision, "cuda" if on_gpu else "cpu", all(facts.bf16))
        note = _tf32_note(chosen, on_gpu)
        facts.items.append(_item(host, "precision", True,
                                 f"{precision}: {chosen} on the {where}{note}"))
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
    facts.items.append(_item(host, "precision", True,
                             f"{precision} on the {where}{_tf32_note(precision, on_gpu)}"))


def _tf32_note(precision: str, on_gpu: bool) -> str:
    """What fp32 and tf32 mean for a GPU's matmuls and convolutions, said beside them."""
    if not on_gpu:
        return ""
    if precision == "tf32":
        return " (TF32 on: fast, not split-exact beyond about 1e-4)"
    return " (TF32 off)" if precision == "fp32" else ""


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
