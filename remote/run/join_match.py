"""What a joiner must share with the run it joins, as the run's launch check found it.

A launch records in ``run.json`` (``RunInfo.checked``) what its check learned that every rank
of the run shares: each host's torch release, the process group's backend and each host's
precision (``launch_checked``). ``corral join`` compares the joiner against that record
(``joiner_mismatch``), not against what the run's hosts answer now: their running ranks use
what was installed when they started, whatever was upgraded since. A mismatch refuses the join
before anything is pushed or started, naming what to fix. The code digest is compared apart
(``RunInfo.code_digest``, ``remote/run/join.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from remote.checks.plan import HostPlan, LaunchFacts

UNDECIDED = ("auto", "tf32")
"""Precisions left to each rank (its GPUs not known to the check): nothing to compare."""


def launch_checked(torch: Mapping[str, str | None], places: Mapping[str, HostPlan],
                   backend: str, facts: LaunchFacts | None = None) -> dict[str, object]:
    """What ``run.json`` keeps of the launch check for a later join: ``{"torch": {host:
    release}, "backend": name, "precision": {host: precision}}`` (a host whose torch did not
    answer is absent), and from the check's ``facts`` what a join's check takes instead of
    probing the run's hosts again (``join_check.py``): ``"address"`` (the address each host's
    ranks use), ``"gpus"`` (GPUs found) and ``"cpu"`` (``{"boot": id, "cpus": [core]}``); none
    of them when no address was found."""
    checked: dict[str, object] = {
        "torch": {h: v for h, v in torch.items() if v and h in places},
        "backend": backend,
        "precision": {name: place.precision for name, place in places.items()}}
    found = {h: a for h, a in (facts.addresses if facts else {}).items() if a and h in places}
    if facts is None or not found:
        return checked
    checked["address"] = found
    checked["gpus"] = {h: n for h, n in facts.gpus.items() if h in places and n is not None}
    checked["cpu"] = {h: {"boot": c.boot_id, "cpus": sorted(c.cpus or ())}
                      for h, c in facts.cpu.items() if h in places}
    return checked


def joined_checked(checked: Mapping[str, object] | None, host: str, place: HostPlan,
                   backend: str, facts: LaunchFacts) -> dict[str, object] | None:
    """``checked`` (a run's ``launch_checked`` record) with ``host`` added as its join check
    found it (``facts``, its planned ``place``): its torch, precision, address, GPUs and cores
    replace what an earlier join of it left, so the next join takes them from the record
    instead of checking every host again. None when the run recorded nothing (an older
    corral: nothing to compare a joiner with, nothing to add to)."""
    if not checked:
        return None
    joiner = launch_checked(facts.torch, {host: place}, backend, facts)
    merged = dict(checked)
    for key in ("torch", "precision", "address", "gpus", "cpu"):
        was = checked.get(key)
        kept = {k: v for k, v in was.items() if k != host} if isinstance(was, Mapping) else {}
        found = joiner.get(key)
        merged[key] = {**kept, **(found if isinstance(found, Mapping) else {})}
    return merged


def _texts(value: object) -> dict[str, str]:
    """A recorded ``{host: text}`` (anything else in a hand-edited record: nothing known)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def joiner_mismatch(checked: Mapping[str, object] | None, host: str, torch: str | None,
                    place: HostPlan, backend: str) -> str | None:
    """Why ``host`` (its torch release, its planned place, the backend its plan chose) cannot
    join the run whose launch check recorded ``checked`` (``launch_checked``), naming the fix;
    None when it can, or when the run recorded nothing (launched by an older corral)."""
    if not checked:
        return None
    releases = sorted(set(_texts(checked.get("torch")).values()))
    if torch is not None and releases and torch not in releases:
        want = releases[0]
        return (f"{host} runs torch {torch}, but the run's ranks were launched with torch "
                f"{', '.join(releases)}: install torch=={want} on {host} (`<python> -m pip "
                f"install torch=={want}`), then `corral join {host}` again")
    run_backend = checked.get("backend")
    if isinstance(run_backend, str) and run_backend and backend != run_backend:
        return (f"the run's ranks talk over {run_backend}, but {host}'s ranks would train on the "
                f"{place.device} ({backend}): join a host whose ranks can use {run_backend} "
                f"(nccl: a GPU for each rank; set {host}'s gpus in cluster.toml)")
    precisions = set(_texts(checked.get("precision")).values()) - set(UNDECIDED)
    if precisions and place.precision not in UNDECIDED and place.precision not in precisions:
        return (f"{host} would compute in {place.precision}, the run's hosts in "
                f"{', '.join(sorted(precisions))}: a joiner computes as the run does; join a "
                f"host that can (bf16: GPUs of compute capability 8.0+), or set [run] precision "
                f"to one {host} can do at the run's next launch")
    return None
