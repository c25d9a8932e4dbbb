"""``corral check`` on a host with a container: the engine, the image (or rootfs), the run
containers left behind, and hints that name the container's fix instead of ``corral setup``.

The probes themselves (Python, torch, CUDA, imports, data) run inside the container through
the host's interpreter word (``remote.hosts.interpreter.python_word``); the parts here run
in the host's own shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from remote.config.cluster import HostSection
from remote.events import CheckItem
from remote.hosts import container
from remote.hosts.sections import MISSING

ENGINE_SECTION = "container"
LEFTOVER_SECTION = "containers"


def container_parts(host: HostSection) -> dict[str, str]:
    """The host-side probe parts of a host with a container (none for the others)."""
    if host.container is None:
        return {}
    return {ENGINE_SECTION: container.probe_command(host),
            LEFTOVER_SECTION: container.names_command(host)}


ENGINE_DOWN = ("hung", "daemon")
"""The engine section's ``image`` answers that say the engine itself cannot be used: the
probe skipped everything else (``remote.checks.preflight``), and the check is one row."""


def engine_down(sections: Mapping[str, tuple[str, int]]) -> bool:
    """Whether the engine hung or could not reach its daemon (the probe stopped there)."""
    found = dict(line.split(" ", 1) for line in sections.get(ENGINE_SECTION, MISSING)[0]
                 .splitlines() if " " in line)
    return found.get("image") in ENGINE_DOWN


def _down_item(host: HostSection, engine: str, found: Mapping[str, str]) -> CheckItem:
    """The one row of a host whose engine hung or has no daemon."""
    name = engine.rsplit("/", 1)[-1]
    if found.get("image") == "hung":
        return CheckItem(host=host.name, name="engine", ok=False,
                         detail=f"{name} did not answer within "
                                f"{container.CHECK_ENGINE_LIMIT_S} s on {host.name} (hung)",
                         hint=f"log in to {host.name}, see why `{name} info` hangs and restart "
                              f"its service; then run `corral check` again")
    said = found.get("said", "").strip()
    return CheckItem(host=host.name, name="engine", ok=False,
                     detail=f"{name}'s daemon is not running on {host.name}"
                            + (f" ({said})" if said else ""),
                     hint=f"start it on {host.name} (`sudo systemctl start {name}`), or set "
                          f"container.engine of {host.name!r} to podman (no daemon)")


def _engine_name(host: HostSection) -> str:
    assert host.container is not None
    return host.container.engine or "podman (or docker)"


def judge_container(host: HostSection, sections: Mapping[str, tuple[str, int]]
                    ) -> tuple[list[CheckItem], bool]:
    """The engine, image and leftover items, and whether the container can start at all
    (when not, the probes run inside it are not judged: this item names the cause)."""
    box = host.container
    if box is None:
        return [], True
    found = dict(line.split(" ", 1) for line in sections.get(ENGINE_SECTION, MISSING)[0]
                 .splitlines() if " " in line)
    engine = found.get("engine", "-")
    if engine == "-":
        return [CheckItem(host=host.name, name="engine", ok=False,
                          detail=f"{_engine_name(host)} not found on {host.name}",
                          hint=f"install {_engine_name(host)} on {host.name} "
                               f"(Debian: apt-get install podman runc), or set "
                               f"container.engine of {host.name!r} to the engine it has")], False
    if found.get("image") in ENGINE_DOWN:
        return [_down_item(host, engine, found)], False
    items = [CheckItem(host=host.name, name="engine", ok=True, detail=engine)]
    what = f"image {box.image}" if box.image else f"rootfs {box.rootfs}"
    if found.get("image") != "yes":
        fix = (f"run `corral setup {host.name}` to pull it (or pull it there by hand), or fix "
               f"container.image of {host.name!r}" if box.image else
               f"fix container.rootfs of {host.name!r}: a directory on {host.name}")
        items.append(CheckItem(host=host.name, name="image", ok=False,
                               detail=f"{what} is not on {host.name}", hint=fix))
        return items, False
    items.append(CheckItem(host=host.name, name="image", ok=True, detail=what))
    runs = container.runs_of_names(sections.get(LEFTOVER_SECTION, MISSING)[0], host.name)
    items.append(CheckItem(
        host=host.name, name="containers", ok=not runs,
        detail="none" if not runs else f"containers of run(s) {', '.join(runs)}",
        hint="; ".join(f"corral stop {run_id}" for run_id in runs)))
    return items, True


def container_hints(host: HostSection, items: list[CheckItem]) -> list[CheckItem]:
    """``items`` with the fix of a failed python/torch/cuda item said for the container."""
    box = host.container
    if box is None:
        return items
    what = f"image {box.image}" if box.image else f"rootfs {box.rootfs}"
    hints = {
        "python": f"the container's interpreter did not run: set container.python of "
                  f"{host.name!r} to the image's Python, or use an image that has one",
        "torch": f"{what} has no torch: use an image with torch (e.g. an NVIDIA PyTorch "
                 f"image) in container.image of {host.name!r}",
        "cuda": f"the container sees fewer GPUs than gpus asks for: pass them in (podman: "
                f"the NVIDIA Container Toolkit's CDI spec, `nvidia-ctk cdi generate "
                f"--output=/etc/cdi/nvidia.yaml`; docker: its NVIDIA runtime), or lower gpus "
                f"of {host.name!r}",
    }
    return [replace(item, hint=hints[item.name]) if not item.ok and item.name in hints
            else item for item in items]
