"""``corral profile``: benchmark the configured model on every host and store the profiles.

The code is pushed first (the same content-addressed push as a run), then every host runs
``python -m trainer.profile_model --model <model> --threads <threads> --slowdown <slowdown> --json
--save``: the profile is saved in the host's profile store, where the trainer's proportional
and dynamic policies find it, and printed as JSON for the table. Hosts on different machines
run at once; hosts that share a machine (``local`` ones, or one address named twice) run one
after the other, so that they do not slow each other down and skew the measurement.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from typing import Any

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.hosts.interpreter import python_word
from remote.hosts.pool import HostPool
from remote.hosts.push import CodeBundle, build_bundle, code_dir, push_code
from remote.hosts.transport import Transport, shell_path

PROFILE_TIMEOUT_S = 900.0
"""Seconds one host's benchmark may take (a large model on a slow CPU is slow)."""


@dataclass(frozen=True, kw_only=True)
class HostProfile:
    """One host's benchmark result (``ok`` False: ``error`` says why)."""

    host: str
    ok: bool
    device: str = ""
    device_name: str = ""
    batches: tuple[int, ...] = ()
    """Local batch sizes measured."""
    samples_per_s: tuple[float, ...] = ()
    """Throughput at each of ``batches``."""
    fixed_s: float | None = None
    """Fitted fixed seconds per step (``a`` in ``t(b) = a + c*b``)."""
    per_sample_s: float | None = None
    """Fitted seconds per sample (``c``)."""
    max_batch: int | None = None
    error: str = ""


def profile_command(host: HostSection, model: str, digest: str) -> str:
    """The shell command that benchmarks ``model`` on ``host`` from the pushed tree."""
    args = ["--model", model, "--slowdown", repr(float(host.slowdown)), "--json", "--save"]
    if host.threads is not None:
        args[2:2] = ["--threads", str(host.threads)]
    flags = " ".join(shlex.quote(a) for a in args)
    return (f"cd {shell_path(code_dir(host.workdir, digest))} && "
            f"PYTHONPATH=\"$PWD\" {python_word(host)} "
            f"-m trainer.profile_model {flags}")


def _json_object(stdout: str) -> dict[str, Any] | None:
    """The JSON object at the end of ``stdout`` (one line or indented over several)."""
    lines = stdout.strip().splitlines()
    for start in reversed([i for i, line in enumerate(lines) if line.startswith("{")]):
        try:
            value = json.loads("\n".join(lines[start:]))
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def parse_profile(host: str, stdout: str) -> HostProfile:
    """The ``HostProfile`` in the benchmark's JSON output."""
    data = _json_object(stdout)
    if data is None:
        return HostProfile(host=host, ok=False, error="the benchmark printed no JSON result")
    batches = tuple(int(b) for b in data.get("batches", ()))
    step_s = tuple(float(s) for s in data.get("step_s", ()))
    rates = data.get("samples_per_s") or [b / s if s > 0 else 0.0
                                          for b, s in zip(batches, step_s, strict=False)]
    return HostProfile(
        host=host, ok=True, device=str(data.get("device", "")),
        device_name=str(data.get("device_name", "")), batches=batches,
        samples_per_s=tuple(float(r) for r in rates),
        fixed_s=data.get("a"), per_sample_s=data.get("c"), max_batch=data.get("max_batch"),
    )


async def profile_host(transport: Transport, model: str, bundle: CodeBundle) -> HostProfile:
    """Push the code to ``transport``'s host and benchmark ``model`` there."""
    host = transport.host
    try:
        await push_code(transport, bundle)
        done = await transport.run(profile_command(host, model, bundle.digest),
                                   timeout=PROFILE_TIMEOUT_S)
    except CorralError as exc:
        return HostProfile(host=host.name, ok=False, error=exc.message)
    if not done.ok:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        return HostProfile(host=host.name, ok=False,
                           error=f"exit status {done.exit_status}: " + " / ".join(tail))
    return parse_profile(host.name, done.stdout)


def machine_groups(config: ClusterConfig) -> list[list[str]]:
    """Host names grouped by the machine they run on (same address = same machine)."""
    groups: dict[str, list[str]] = {}
    for host in config.hosts:
        groups.setdefault(host.address, []).append(host.name)
    return list(groups.values())


async def profile_cluster(config: ClusterConfig, pool: HostPool | None = None) -> list[HostProfile]:
    """Benchmark ``config.run.model`` on every host; one result per host, in config order."""
    bundle = build_bundle()
    own_pool = pool is None
    pool = pool or HostPool(config)
    results: dict[str, HostProfile] = {}

    async def one_machine(names: list[str]) -> None:
        for name in names:
            try:
                transport = await pool.get(name)
            except CorralError as exc:
                results[name] = HostProfile(host=name, ok=False, error=exc.message)
                continue
            results[name] = await profile_host(transport, config.run.model, bundle)

    try:
        await asyncio.gather(*(one_machine(group) for group in machine_groups(config)))
    finally:
        if own_pool:
            await pool.aclose()
    return [results[h.name] for h in config.hosts]
