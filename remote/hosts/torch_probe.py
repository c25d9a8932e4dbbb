"""The probe asking a host its Python, its torch and the GPUs torch can use there (``corral
check``, the first phase of ``corral run``, ``corral setup``), run by the host's interpreter:
``python -c <this file> [DEV]``, standard library only (and pynvml where the host has it).
``DEV`` (default ``/dev``) is where GPU device nodes are looked for: tests name a folder of
their own.

It prints one JSON object: ``python`` and ``executable``; ``torch`` (the release),
``torch_full`` (with its build tag) or ``torch_error``; on a host with GPU device nodes, what
torch says there: ``cuda`` (``torch.cuda.is_available()``), ``gpus``, ``cuda_version`` (the
CUDA torch was built for), ``gpu_names`` and ``bf16`` (per GPU: compute capability 8.0+); and
``how`` it knew, in how many ``seconds`` (the check's log says both).

Importing a CUDA build of torch takes seconds (2.7 to 5.1 s on an H200 machine, 5.2 s for
three hosts of it at once; CUDA's own start after it 0.03 to 0.23 s; NVML's answer 0.06 to
0.1 s: issue 58), so torch is imported only where nothing cheaper tells what it would say:

- no GPU device node (NVIDIA's ``nvidiactl``, AMD's ``kfd``, WSL2's ``dxg``): torch's release
  from its ``version.py``, no GPU (``how``: ``version.py``);
- GPU nodes and a CPU build of torch (``version.py``: ``cuda`` and ``hip`` None): no GPU torch
  can use (``version.py``);
- NVIDIA's nodes, a CUDA build and NVML (``nvml``) when it can tell exactly what CUDA will:
  ``nvidiactl`` and ``nvidia-uvm`` (CUDA opens it; NVML does not) and each GPU's node open to
  this user, the driver's CUDA at least torch's, no GPU in MIG mode, every GPU of one kind
  (NVML numbers them by PCI bus, CUDA fastest first: one kind, one answer whatever the order),
  and ``CUDA_VISIBLE_DEVICES`` unset, empty or distinct indices of GPUs that exist;
- anything else (AMD, WSL2, GPUs of two kinds, a driver older than torch's CUDA, pynvml absent
  or failing): torch imported and asked (``import``), as every probe did before.

A torch that cannot be imported is found only on that last path (and at the launch): the
others never import it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

GPU_NODES = ("nvidiactl", "kfd", "dxg")
"""The device nodes through which torch reaches a GPU: NVIDIA's, AMD's, WSL2's."""
CUDA_NODES = ("nvidiactl", "nvidia-uvm")
"""The nodes CUDA opens at its start besides each GPU's ``nvidia<minor>``."""
BUILD_NAMES = ("__version__", "cuda", "hip")
"""What ``torch/version.py`` says that the probe reads: the release and the GPU build."""


def torch_build(origin: str) -> dict[str, Any]:
    """``BUILD_NAMES`` as torch's ``version.py`` beside ``origin`` (its ``__init__.py``) sets
    them, read without importing torch; those it lacks (or an unreadable file) left out."""
    found: dict[str, Any] = {}
    with contextlib.suppress(OSError), open(
            os.path.join(os.path.dirname(origin), "version.py"), encoding="utf-8") as f:
        for line in f:
            name, equals, value = line.partition("=")
            name = name.split(":")[0].strip()  # "cuda: Optional[str] = '13.0'"
            if equals and name in BUILD_NAMES:
                with contextlib.suppress(ValueError, SyntaxError):
                    found[name] = ast.literal_eval(value.strip())
    return found


def open_to_us(path: str) -> bool:
    """Whether this user may read and write the device node ``path``."""
    return os.access(path, os.R_OK | os.W_OK)


def visible_count(count: int, environ: Mapping[str, str]) -> int | None:
    """How many of the host's ``count`` GPUs ``CUDA_VISIBLE_DEVICES`` leaves to CUDA; None
    where only CUDA can tell (UUIDs, MIG names, an index twice or of no GPU)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return count
    if not value.strip():
        return 0
    words = value.split(",")
    if all(w.isdigit() and int(w) < count for w in words) and len(set(words)) == len(words):
        return len(words)
    return None


def mig_on(nvml: ModuleType, handle: Any) -> bool:
    """Whether the GPU runs in MIG mode (CUDA then sees its instances, not the GPU)."""
    try:
        return bool(nvml.nvmlDeviceGetMigMode(handle)[0])
    except nvml.NVMLError_NotSupported:  # a GPU without MIG
        return False


def nvml_gpus(nvml: ModuleType, dev: str, build_cuda: tuple[int, ...],
              environ: Mapping[str, str]) -> dict[str, Any] | None:
    """What ``torch.cuda`` says of the GPUs, from NVML; None where NVML cannot tell it exactly
    (``probe``'s docstring says when). NVML's errors are raised."""
    nvml.nvmlInit()
    try:
        driver = (getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None)
                  or nvml.nvmlSystemGetCudaDriverVersion)()
        if (driver // 1000, driver % 1000 // 10) < build_cuda:
            return None  # torch says "no CUDA" and why: let it
        kinds = set()
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            node = os.path.join(dev, f"nvidia{nvml.nvmlDeviceGetMinorNumber(handle)}")
            if mig_on(nvml, handle) or not open_to_us(node):
                return None
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            kinds.add((name, tuple(nvml.nvmlDeviceGetCudaComputeCapability(handle))))
        count = visible_count(nvml.nvmlDeviceGetCount(), environ)
    finally:
        nvml.nvmlShutdown()
    if count is None or len(kinds) > 1:
        return None
    kind = [(name, capability[0] >= 8) for name, capability in kinds] * count
    return {"cuda": count > 0, "gpus": count, "gpu_names": [name for name, _ in kind],
            "bf16": [bf16 for _, bf16 in kind]}


def gpus_without_torch(build: Mapping[str, Any], nodes: list[str], dev: str,
                       environ: Mapping[str, str], load_nvml: Callable[[], ModuleType]
                       ) -> dict[str, Any] | None:
    """What torch says of a host's GPUs (it has ``nodes``), without importing it; None where
    only torch can say."""
    cuda, hip = build.get("cuda"), build.get("hip")
    if not cuda and not hip:  # a CPU build sees no GPU, whatever the host has
        return {"cuda": False, "gpus": 0, "cuda_version": None, "gpu_names": [], "bf16": [],
                "how": "version.py"}
    if hip or nodes != ["nvidiactl"]:
        return None
    if not all(open_to_us(os.path.join(dev, node)) for node in CUDA_NODES):
        return None  # CUDA's start fails (or makes the node) where NVML answers: ask torch
    try:
        build_cuda = tuple(int(part) for part in str(cuda).split(".")[:2])
        found = nvml_gpus(load_nvml(), dev, build_cuda, environ)
    except Exception:  # pynvml absent, NVML failing, an odd version: torch tells
        return None
    return None if found is None else {**found, "cuda_version": cuda, "how": "nvml"}


def gpus_from_torch() -> dict[str, Any]:
    """torch imported and asked: its version and what it says of the GPUs."""
    import torch

    cuda = bool(torch.cuda.is_available())
    gpus = torch.cuda.device_count() if cuda else 0
    out: dict[str, Any] = {
        "torch_full": torch.__version__, "cuda": cuda, "gpus": gpus,
        "cuda_version": torch.version.cuda, "how": "import",
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(gpus)]}
    with contextlib.suppress(Exception):  # no answer (an old or fake torch): nothing to check
        out["bf16"] = [torch.cuda.get_device_capability(i)[0] >= 8 for i in range(gpus)]
    return out


def probe(dev: str, environ: Mapping[str, str],
          load_nvml: Callable[[], ModuleType]) -> dict[str, Any]:
    """The probe's answer (the module's docstring says its keys)."""
    began = time.perf_counter()
    out: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    spec = importlib.util.find_spec("torch")
    try:
        if spec is None:
            raise ImportError("No module named 'torch'")
        build = torch_build(spec.origin) if spec.origin else {}
        nodes = [node for node in GPU_NODES if os.path.exists(os.path.join(dev, node))]
        answer: dict[str, Any] | None = None
        if "__version__" in build:
            answer = (gpus_without_torch(build, nodes, dev, environ, load_nvml) if nodes
                      else {"how": "version.py"})
        if answer is None:
            answer = gpus_from_torch()
        version = str(answer.pop("torch_full", build.get("__version__")))
        out.update(answer, torch=version.split("+")[0], torch_full=version)
    except Exception as exc:
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.perf_counter() - began
    return out


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1] if len(sys.argv) > 1 else "/dev", os.environ,
                           lambda: importlib.import_module("pynvml"))))
