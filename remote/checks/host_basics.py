"""What the basic sections of a host's probe say: Python and torch with the GPUs torch sees,
the workdir's free disk, the interface that routes to the master (``preflight.py`` runs the
probe and calls these; other sections have their own modules beside this one).
"""

from __future__ import annotations

from remote.checks.host_facts import HostFacts
from remote.checks.torch_versions import torch_release_item
from remote.config.cluster import ClusterConfig, HostSection
from remote.events import CheckItem, CheckTiming
from remote.hosts.interpreter import last_json, python_label
from remote.hosts.netif import parse_interface
from remote.hosts.sections import MISSING, section_text

MIN_PYTHON = (3, 10)
MIN_FREE_BYTES = 1 << 30
"""A workdir with less free space than this fails the disk check (code, logs, checkpoints)."""


def item(host: HostSection | str, name: str, ok: bool, detail: str, hint: str = "") -> CheckItem:
    """One row of the check table."""
    label = host if isinstance(host, str) else host.name
    return CheckItem(host=label, name=name, ok=ok, detail=detail, hint=hint)


def fix_in_toml(host: HostSection, key: str, example: str) -> str:
    """The hint that names the cluster.toml key to set for ``host``."""
    return f"set {key} = {example} in the [[hosts]] entry named {host.name!r} of cluster.toml"


def judge_python(host: HostSection, text: str, status: int, facts: HostFacts) -> None:
    """The python section: Python's version, torch's release, the GPUs torch sees."""
    found = last_json(text) if status == 0 else None
    if found is None:
        why = (text.strip().splitlines() or [f"exit status {status}"])[-1]
        # A python that cluster.toml names is used whatever setup makes: fix that path. Left
        # out, the host runs what setup would make (its workdir's venv): setup helps then.
        fix = fix_in_toml(host, "python", '"/path/to/python3"')
        facts.items.append(item(host, "python", False,
                                 f"{python_label(host)!r} did not run: {why}",
                                 fix if host.python is not None
                                 else f"run `corral setup {host.name}`, or {fix}"))
        return
    if isinstance(seconds := found.get("seconds"), (int, float)):  # an older probe: none
        facts.timings.append(CheckTiming(host=host.name, name="torch", seconds=float(seconds),
                                         how=str(found.get("how", ""))))
    version = str(found.get("python", "?"))
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    facts.python_ok = parts >= MIN_PYTHON
    need = ".".join(map(str, MIN_PYTHON))
    if found.get("executable"):
        facts.executable = str(found["executable"])
    executable = facts.executable or python_label(host)
    facts.items.append(item(
        host, "python", facts.python_ok, f"{version} ({executable})",
        "" if facts.python_ok else
        f"install Python >= {need} on {host.name} and " + fix_in_toml(host, "python", '"..."'),
    ))
    if "torch" not in found:
        facts.items.append(item(
            host, "torch", False, str(found.get("torch_error", "torch not importable")),
            f"run `corral setup {host.name}` (a virtual environment with the master's torch "
            f"under {host.workdir}), or install torch for {python_label(host)}",
        ))
        return
    facts.torch = str(found["torch"])
    facts.items.append(torch_release_item(host, str(found.get("torch_full", facts.torch)),
                                          str(executable)))
    gpus = facts.gpus = int(found.get("gpus", 0))
    facts.gpu_names = [str(n) for n in found.get("gpu_names") or []]
    facts.bf16 = [bool(b) for b in found.get("bf16") or []]
    names = sorted(set(facts.gpu_names))
    if gpus:
        detail = f"{gpus} GPU(s): {', '.join(names)} (CUDA {found.get('cuda_version')})"
    else:
        detail = "no CUDA device (CPU ranks)"
    ok = host.gpus == "auto" or host.gpus <= gpus
    hint = "" if ok else (f"{host.name} has {gpus} GPU(s) that torch can use; "
                          + fix_in_toml(host, "gpus", f'{gpus} (or "auto")'))
    facts.items.append(item(host, "cuda", ok, detail, hint))


def judge_disk(host: HostSection, df_line: str, facts: HostFacts) -> None:
    """The disk section: enough free space for the workdir."""
    fields = df_line.split()
    if len(fields) < 4 or not fields[3].isdigit():
        facts.items.append(item(host, "disk", False, f"could not read free space: {df_line}",
                                 f"check that {host.workdir!r} is a valid path on {host.name}"))
        return
    free = int(fields[3]) * 1024
    ok = free >= MIN_FREE_BYTES
    facts.items.append(item(
        host, "disk", ok, f"{free / (1 << 30):.1f} GiB free for {host.workdir}",
        "" if ok else f"free space on {host.name} or " + fix_in_toml(host, "workdir", '"..."'),
    ))


def judge_interface(host: HostSection, config: ClusterConfig, master_addr: str,
                    sections: dict[str, tuple[str, int]], facts: HostFacts) -> None:
    """The interface section: the one that routes to the master (or cluster.toml's)."""
    if host.interface is not None:
        links, status = sections.get("links", MISSING)
        names = {line.split()[1].split("@")[0] for line in links.splitlines()
                 if len(line.split()) > 1 and line.split()[0].rstrip(":").isdigit()}
        ok = status != 0 or host.interface in names
        facts.items.append(item(
            host, "interface", ok, f"{host.interface} (from cluster.toml)",
            "" if ok else f"{host.name} has no interface {host.interface!r} (it has "
            f"{', '.join(sorted(names))}); " + fix_in_toml(host, "interface", '"<one of them>"'),
        ))
        return
    is_master = host.name == config.cluster.master
    address, name = parse_interface(section_text(sections, "interface"), is_master=is_master)
    how = "holds" if is_master else "routes to"
    if address is None:
        facts.items.append(item(
            host, "interface", False, f"{host.name} cannot resolve the master address "
            f"{master_addr!r}", "set [cluster] master_addr to an IP address of the master, or "
            "to a name that every host resolves"))
    elif name is not None:
        facts.interface = name
        facts.items.append(item(host, "interface", True, f"{name} ({how} {master_addr})"))
    else:
        facts.items.append(item(
            host, "interface", True, f"warning: cannot tell which interface {how} "
            f"{master_addr} (is `ip` installed?); Gloo/NCCL will choose",
            f"install iproute2 on {host.name} or " + fix_in_toml(host, "interface", '"eth0"'),
        ))
