"""Which pip distribution provides a module: the fix for a module a host cannot find.

A module's import name and its distribution's name often differ (``import yaml`` comes from
``pyyaml``). This machine's installed metadata answers first
(``importlib.metadata.packages_distributions``: where the master has the package, that is the
name); ``FAMOUS_MISMATCHES`` answers for the well-known ones it does not have; else the module's
own name. torch's companion packages come from torch's own index, matched to the host's torch.
"""

from __future__ import annotations

import functools
from importlib import metadata

FAMOUS_MISMATCHES = {
    "hydra": "hydra-core", "cv2": "opencv-python", "PIL": "pillow",
    "sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "pyyaml",
    "bs4": "beautifulsoup4", "attr": "attrs", "dateutil": "python-dateutil",
    "dotenv": "python-dotenv", "jwt": "pyjwt", "Crypto": "pycryptodome", "serial": "pyserial",
    "fitz": "pymupdf", "docx": "python-docx", "faiss": "faiss-cpu", "git": "gitpython",
    "OpenGL": "pyopengl", "wx": "wxpython", "google": "protobuf", "lightning_fabric":
    "lightning", "tensorflow_datasets": "tensorflow-datasets", "absl": "absl-py",
}
"""Import name → distribution, for famous packages whose names differ."""

TORCH_INDEX = frozenset({"torchvision", "torchaudio", "torchtext", "torchdata"})
"""Packages built against one torch release: installed from torch's own index
(``https://download.pytorch.org/whl/<cpu|cu1xx>``) with the version matching the host's torch, or
pip replaces the host's torch with another build."""


@functools.cache
def _installed() -> dict[str, list[str]]:
    try:
        return dict(metadata.packages_distributions())
    except Exception:  # a broken metadata entry on this machine: fall back to the table
        return {}


def distribution(module: str) -> str:
    """The distribution that provides the top-level ``module``."""
    installed = _installed().get(module)
    if installed:
        return installed[0]
    return FAMOUS_MISMATCHES.get(module, module)


def torch_index_note(modules: list[str]) -> str:
    """A sentence for the fix when any of ``modules`` must come from torch's index."""
    named = [m for m in modules if m in TORCH_INDEX]
    if not named:
        return ""
    return (f"; {', '.join(named)} from torch's own index, the build matching the host's torch "
            "(--index-url https://download.pytorch.org/whl/cpu, or the cuXXX of its CUDA)")
