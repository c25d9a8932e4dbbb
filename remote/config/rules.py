"""Value rules for cluster.toml, shared by the parser and the dataclasses' ``__post_init__``.

A key's own rules are declared on its field (``remote/config/value_rules.py``: ``key``,
``key_problems``); here are the rules that relate several keys of a section or of several
sections, and the upper bound of ``[run]``'s whole-number settings (``ranges.MAX_COUNT``).
Each rule function takes one section's values as a mapping and returns ``(key, problem)``
pairs. A key that is absent (or None) is skipped: the parser leaves out keys whose type was
already wrong, so one mistake is reported once, not again as a knock-on problem elsewhere.
The cross-section rules return ``(where, problem)`` pairs naming the section and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any, Literal

from remote.config.errors import Problems, did_you_mean, host_where, quote, section_where
from remote.config.k8s_rules import label_problem
from remote.config.ranges import MAX_COUNT
from remote.config.value_rules import (
    check_at_most,
    is_whole,
    key_problems,
    ssh_only_keys,
)
from trainer.placement import parse_cpulist
from trainer.settings import relations
from trainer.settings.flags import field_hints
from trainer.settings.run_settings import RunSettings

HostLoss = Literal["stop", "continue"]
"""``[run] on_host_loss`` choices."""
ImportsCheck = Literal["block", "warn"]  # [run] imports_check's choices
KnownHosts = Literal["strict", "insecure"]
"""``[ssh] known_hosts`` choices."""

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
INTERFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}\Z")
"""A Linux interface name: at most 15 characters, no spaces or slashes."""


def resolved_nproc(nproc: int | None, gpus: object) -> int | None:
    """Ranks on a host when known without asking it: ``nproc``, else the GPU count when it
    is given as a number (1 for ``gpus = 0``), else None (``gpus = "auto"``)."""
    if nproc is not None:
        return nproc
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        return max(gpus, 1)
    return None


def host_problems(section: type, values: Mapping[str, Any]) -> Problems:
    """Rules for one ``[[hosts]]`` entry on its own: each key's, as the fields of ``section``
    (``HostSection``) declare them, then those of several keys or of a table's entries."""
    out = key_problems(section, values)
    nproc, gpus = values.get("nproc"), values.get("gpus")
    if is_whole(nproc) and is_whole(gpus) and gpus > 0 and nproc > gpus:
        out.append(("nproc", f"{nproc} ranks but only {gpus} GPUs (gpus = {gpus}); "
                             "use at most one rank per GPU"))
    env = values.get("env")
    if isinstance(env, Mapping):
        for name, value in env.items():
            if not ENV_NAME_RE.match(str(name)):
                out.append((f"env.{quote(str(name))}", "is not a valid environment variable "
                            "name (letters, digits and '_', not starting with a digit)"))
            elif isinstance(value, str) and "\0" in value:
                out.append((f"env.{name}", "must not contain a NUL character"))
    cores = values.get("cores")
    if isinstance(cores, str):
        try:
            parse_cpulist(cores)
        except ValueError:
            out.append(("cores", f"is not a list of cores like \"0-7\" or \"0,2,4-6\", got "
                                 f"{quote(cores)}"))
    setup = values.get("setup")
    if isinstance(setup, Sequence) and not isinstance(setup, str):
        for index, line in enumerate(setup):
            if isinstance(line, str) and (not line.strip() or "\0" in line):
                out.append((f"setup[{index}]", "must be a non-empty shell line without NUL"))
    selector = values.get("node_selector")
    for label, value in (selector.items() if isinstance(selector, Mapping) else ()):
        problem = label_problem(str(label), str(value))
        if problem:
            out.append((f"node_selector.{quote(str(label))}", problem))
    interface = values.get("interface")
    if isinstance(interface, str) and not INTERFACE_RE.match(interface):
        out.append(("interface", f"is not a network interface name (like eth0 or enp3s0, "
                                 f"at most 15 characters), got {quote(interface)}"))
    if values.get("address") == "local":
        for key in ssh_only_keys(section):
            if values.get(key) is not None:
                out.append((key, 'has no effect on a local host (address = "local"); remove '
                                 "it, or set address to the machine's SSH address"))
    return out


RUN_NAME_MAX = 64
"""Longest run name: it shares a header line with the cluster and the run id."""


def run_name_problem(name: str) -> str:
    """Why ``name`` cannot name a run ("" when it can): printable text, 1 to 64 characters."""
    if not name.strip():
        return "must not be empty; leave it out for a run without a name"
    if len(name) > RUN_NAME_MAX:
        return f"must be at most {RUN_NAME_MAX} characters, got {len(name)}"
    if not name.isprintable():
        return "must be printable text (no tabs, newlines or control characters)"
    return ""


def run_problems(section: type, values: Mapping[str, Any]) -> Problems:
    """Rules for ``[run]`` on its own: each key's, as the fields of ``section``
    (``RunSection``, with the settings it shares with the trainer) declare them; the
    whole-number settings' upper bound; then the relations between keys
    (``trainer.settings.relations``, the trainer's own) over the keys that passed their own
    rules."""
    out = key_problems(section, values)
    hints = field_hints(RunSettings)
    for key in (f.name for f in fields(RunSettings) if hints[f.name] in (int, int | None)):
        check_at_most(out, values, key, 2**63 - 1 if key == "seed" else MAX_COUNT)
    wrong = {key for key, _ in out}
    valid = {key: value for key, value in values.items() if key not in wrong}
    return out + relations.problems(valid, KEY_NAMING)


def _toml_text(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    return quote(value)


KEY_NAMING = relations.Naming(name=str, value=lambda _key, value: _toml_text(value),
                              equals=" = ")
"""How cluster.toml names a field in a relation's problem: as its ``[run]`` key (the section
and the subject key are named by the problem's place)."""


def _on_this_machine(address: str) -> bool:
    """``local`` or a loopback address: such a host reaches a local master at 127.0.0.1."""
    return address in ("local", "localhost", "::1") or address.startswith("127.")


GPU_ONLY = (("precision", "fp16", " (its gradient scaler)", 'use "bf16" or "fp32"'),
            ("backend", "nccl", "", 'use "auto" or "gloo"'))
"""``[run]`` values no CPU-only host can run: key, value, why, the fix."""


def cross_problems(cluster: Mapping[str, Any], hosts: Sequence[Mapping[str, Any]],
                   run: Mapping[str, Any]) -> Problems:
    """Rules that relate sections: unique host names, the master among them, the split
    against the ranks, the backend against the hosts. Returns ``(where, problem)`` pairs."""
    out: Problems = []
    first_index: dict[str, int] = {}
    for index, host in enumerate(hosts):
        name = host.get("name")
        if isinstance(name, str):
            if name in first_index:
                out.append((host_where(index, name, "name"),
                            f"duplicate host name; hosts[{first_index[name]}] is already "
                            f"called {quote(name)}"))
            else:
                first_index[name] = index
    master = cluster.get("master")
    if master is None and "master" in cluster and first_index:
        master = next(iter(first_index))  # left out: the first host
    if isinstance(master, str) and master and hosts and master not in first_index:
        names = ", ".join(quote(n) for n in first_index) or "none"
        out.append((section_where("cluster", "master"),
                    f"{quote(master)} is not the name of any [[hosts]] entry (hosts: {names})"
                    + did_you_mean(master, first_index, fmt='"{}"')))
    elif isinstance(master, str) and master in first_index:
        master_host = hosts[first_index[master]]
        remote = [h.get("name") for h in hosts
                  if isinstance(h.get("address"), str) and not _on_this_machine(h["address"])]
        if (master_host.get("address") == "local" and remote
                and cluster.get("master_addr") is None):
            out.append((section_where("cluster", "master_addr"),
                        f'the master {quote(master)} is local (address = "local") but '
                        f"{', '.join(quote(str(n)) for n in remote)} reach it over the "
                        "network; set master_addr to this machine's address as they see it"))
    for key, value, why, fix in GPU_ONLY:
        if run.get(key) == value:
            out.extend((section_where("run", key),
                        f'"{value}" needs a GPU for every rank{why}, but '
                        f"{host_where(index, host.get('name'))} has gpus = 0; {fix}")
                       for index, host in enumerate(hosts) if host.get("gpus") == 0)
    if "exchange" in run:  # a host's own micro_batch against the run's exchange, the same rule
        for index, host in enumerate(hosts):
            if host.get("micro_batch") is not None:
                values = {"micro_batch": host["micro_batch"], "exchange": run["exchange"]}
                out.extend((host_where(index, host.get("name"), key), problem) for key, problem
                           in relations.problems(values, KEY_NAMING, "micro_batch"))
    out.extend(_world_problems(hosts, run))
    return out


def _world_problems(hosts: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> Problems:
    """The relations that read the world size (``trainer.settings.relations``: the split and global
    batch against the ranks), when every host's rank count is known."""
    counts = [resolved_nproc(h.get("nproc"), h.get("gpus", "auto")) for h in hosts]
    if not hosts or any(c is None for c in counts):
        return []
    world = sum(c for c in counts if c is not None)
    ranks = ", ".join(f"{h.get('name')}: {c}" for h, c in zip(hosts, counts, strict=True))
    naming = replace(KEY_NAMING, ranks=lambda n: f"{KEY_NAMING.ranks(n)} ({ranks})")
    found = relations.problems({**run, relations.WORLD: world}, naming, relations.WORLD)
    return [(section_where("run", key), problem) for key, problem in found]
