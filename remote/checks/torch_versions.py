"""``corral check`` items about torch: the probe that asks a host its Python and torch (also
used by ``corral setup``), one version on every host, and whether each host's ranks can compute
in the run's ``[run] precision``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from remote.api import CheckItem
from remote.config.cluster import HostSection

if TYPE_CHECKING:
    from remote.checks.preflight import HostFacts

# One JSON object: the interpreter's and torch's versions and what CUDA torch sees. torch is
# imported only where a GPU device node exists (importing it takes seconds).
PROBE_PY = """\
import importlib.util, json, os, platform, sys
out = {"python": platform.python_version(), "executable": sys.executable}
spec = importlib.util.find_spec("torch")
version = None
if spec is not None and spec.origin:
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            for line in f:
                if line.startswith("__version__"):
                    version = line.split("=", 1)[1].strip().strip(chr(34) + chr(39))
    except OSError:
        pass
gpu_nodes = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd"))
try:
    if spec is None:
        raise ImportError("No module named 'torch'")
    if version is None or gpu_nodes:
        import torch
        version = torch.__version__
        cuda = bool(torch.cuda.is_available())
        gpus = torch.cuda.device_count() if cuda else 0
        out.update(cuda=cuda, gpus=gpus, cuda_version=torch.version.cuda,
                   gpu_names=[torch.cuda.get_device_name(i) for i in range(gpus)])
        try: out["bf16"] = [torch.cuda.get_device_capability(i)[0] >= 8 for i in range(gpus)]
        except Exception: pass  # no answer (an old or fake torch): nothing to check
    out.update(torch=version.split("+")[0], torch_full=version)
except Exception as exc:
    out["torch_error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def judge_precision(host: HostSection, precision: str, facts: HostFacts) -> None:
    """Can the host's ranks compute in ``[run] precision``? (fp16: a GPU; bf16: a CPU, or GPUs
    of compute capability 8.0+.) Nothing to say for fp32 or when torch did not answer."""
    if precision == "fp32" or facts.gpus is None:
        return
    on_gpu = bool(facts.gpus) and host.gpus != 0
    where = "GPU" if on_gpu else "CPU"
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
