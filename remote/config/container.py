"""``[hosts.container]``: a host whose trainer runs inside a container (podman or docker).

The section and its value rules; what the engine is told is built in
``remote.hosts.container`` (docs/containers.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from remote.config.errors import ConfigError, ConfigProblem, Problems, quote

Engine = Literal["podman", "docker"]


@dataclass(frozen=True, kw_only=True)
class ContainerSection:
    """``[hosts.container]``: run everything of the host's part of a run (the check's probes,
    torchrun and its ranks, the event tailer) in a container; see docs/containers.md."""

    image: str | None = None
    """The image (with Python and torch), e.g. ``"nvcr.io/nvidia/pytorch:25.01-py3"``;
    ``corral setup`` pulls it. Give ``image`` or ``rootfs``."""
    rootfs: str | None = None
    """Instead of an image, a root filesystem directory on the host, mounted as an overlay so
    the container never changes it (podman only: ``--rootfs DIR:O``)."""
    engine: Engine | None = None
    """``podman`` or ``docker``; default: podman where the host has it, else docker."""
    options: tuple[str, ...] = ()
    """Extra arguments for the engine's ``run``, one string each (quoted by corral), e.g.
    ``["--shm-size", "16g"]``."""
    python: str = "python3"
    """The interpreter inside the container (the host's ``python`` key wins when set)."""
    mounts: tuple[str, ...] = ()
    """Host directories mounted inside at the same path (a data folder, say), besides the two
    corral always mounts: the host's ``workdir`` and ``[cluster] run_root``."""
    run_root: str = field(default="", init=False, repr=False, compare=False)
    # [cluster] run_root, set by ClusterConfig: the container mounts it (not a key of its own)

    def __post_init__(self) -> None:
        problems = container_problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise ConfigError([ConfigProblem(path=None, where=f"[hosts.container] {key}",
                                             message=message) for key, message in problems])


def bind_run_root(containers: Iterable[ContainerSection | None], run_root: str) -> None:
    """Tell each host's container the cluster's run root, which it mounts."""
    for container in containers:
        if container is not None:
            object.__setattr__(container, "run_root", run_root)


def container_problems(values: Mapping[str, Any]) -> Problems:
    """Rules for one ``[hosts.container]`` table on its own."""
    out: Problems = []
    image, rootfs = values.get("image"), values.get("rootfs")
    if image is None and rootfs is None:
        out.append(("image", 'missing; give the image to run (image = "REGISTRY/IMAGE:TAG") '
                             'or a root filesystem directory (rootfs = "/path")'))
    elif image is not None and rootfs is not None:
        out.append(("rootfs", "give image or rootfs, not both; remove one"))
    for index, mount in enumerate(values.get("mounts") or ()):
        if isinstance(mount, str) and (not mount.startswith(("/", "~")) or ":" in mount):
            out.append((f"mounts[{index}]", f"must be an absolute host path without ':', "
                                            f"got {quote(mount)}"))
    for key in ("image", "rootfs", "python"):
        value = values.get(key)
        if isinstance(value, str) and (not value.strip() or any(c in value for c in "\0\n")):
            out.append((key, f"must be a non-empty line of text, got {quote(value)}"))
    if isinstance(image, str) and (" " in image or image.startswith("-")):
        out.append(("image", f"is not an image reference, got {quote(image)}"))
    if isinstance(rootfs, str) and not rootfs.startswith(("/", "~")):
        out.append(("rootfs", f"must be an absolute path on the host, got {quote(rootfs)}"))
    if rootfs is not None and values.get("engine") == "docker":
        out.append(("rootfs", 'needs engine = "podman" (docker runs images only); give an '
                              "image instead"))
    for index, option in enumerate(values.get("options") or ()):
        if isinstance(option, str) and "\0" in option:
            out.append((f"options[{index}]", "must not contain a NUL character"))
    return out
