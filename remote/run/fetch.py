"""``corral fetch``: bring a run's final model (or newest checkpoint) back to this machine.

Rank 0's host writes the results (``RUN_DIR/final/`` for the final model or adapter, a file or
directory per checkpoint). The fetch asks that host for a manifest (every file's size and
sha256, computed there), then copies each file in chunks over the host's command channel into
``<local run dir>/fetched/`` as ``<name>.part``, and renames it into place only once its
sha256 matches the manifest. An interrupted fetch leaves the ``.part`` files and the manifest
(``fetched/.manifest-<what>.json``); the next fetch continues each file where it stopped, unless
the host's file changed in between (then it starts that file again).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.hosts.interpreter import python_word
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from remote.records.history import rank_files, read_lines
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from trainer.events import CheckpointEvent, StartEvent
from trainer.run_layout import RunLayout

CHUNK_BYTES = 4 << 20
"""Bytes per copy command (sent base64-encoded)."""
CHUNK_TIMEOUT_S = 120.0
HASH_BLOCK = 1 << 20

MANIFEST_SCRIPT = """
import hashlib, json, os, sys
root = sys.argv[1]
if not os.path.exists(root):
    print(json.dumps(None)); sys.exit(0)
paths = [root] if os.path.isfile(root) else sorted(
    os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
out = []
for path in paths:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    rel = os.path.basename(path) if path == root else os.path.relpath(path, root)
    out.append([rel, os.path.getsize(path), digest.hexdigest()])
print(json.dumps(out))
"""
"""Run with the host's python: the files under a path (or the file itself), sizes, sha256."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, as the host described it."""

    name: str
    """Path relative to the fetched directory or file."""
    size: int
    sha256: str


@dataclass(frozen=True)
class Fetched:
    """What a fetch brought back."""

    host: str
    directory: Path
    files: int
    bytes: int
    """Bytes copied by this fetch."""
    resumed: int
    """Bytes already here from an interrupted fetch, not copied again."""


def source_host(config: ClusterConfig, info: RunInfo) -> str:
    """The host of rank 0 (from the run's event copy), else the cluster's master."""
    holder = rank_files(local_run_dir(config, info.run_id)).get(0)
    if holder is not None and holder[0] in {h.name for h in config.hosts}:
        return holder[0]
    return config.master_name


def source_path(config: ClusterConfig, info: RunInfo,
                what: Literal["final", "checkpoint"]) -> tuple[str, str]:
    """The path on the host to fetch and the local name it gets under ``fetched/``."""
    remote_dir = run_dir_for(config, info.run_id)
    if what == "final":
        return RunLayout(remote_dir).path(RunLayout.FINAL), RunLayout.FINAL
    lines, _ = read_lines(local_run_dir(config, info.run_id))
    saved = [line.event for line in lines if isinstance(line.event, CheckpointEvent)]
    if not saved:
        raise CorralError(f"run {info.run_id} recorded no checkpoint; nothing to fetch "
                          "(try --final for the final model)", title="no checkpoint")
    newest = max(saved, key=lambda e: e.step)
    path = newest.path if newest.path.startswith(("/", "~")) else f"{remote_dir}/{newest.path}"
    return path, Path(newest.path).name


async def manifest(transport: Transport, path: str) -> list[RemoteFile] | None:
    """The host's description of ``path`` (None when it does not exist)."""
    command = (f"{python_word(transport.host)} -c {shlex.quote(MANIFEST_SCRIPT)} "
               f"{shell_path(path)}")
    done = await transport.run(command, check=True, timeout=CHUNK_TIMEOUT_S)
    listed = json.loads(done.stdout.strip().splitlines()[-1])
    if listed is None:
        return None
    return [RemoteFile(name=n, size=int(s), sha256=h) for n, s, h in listed]


def _nothing_hint(config: ClusterConfig, info: RunInfo, what: str, host: str) -> str:
    """Why there is nothing to fetch, and what to do."""
    if what != "final":
        return "the checkpoint is gone from the host"
    lines, _ = read_lines(local_run_dir(config, info.run_id))
    script = any(isinstance(line.event, StartEvent) and line.event.task == "script"
                 for line in lines)
    if not script and config.run.script is None:
        return "the run has not written its final model yet (it lands when the run completes)"
    cwd = shlex.quote(RunLayout(run_dir_for(config, info.run_id)).script_cwd(host))
    return (f"a script's run has no final/ unless corral's Hugging Face opt-in wrote it; your "
            f"script's files are where it wrote them: on {host} (rank 0's host), a relative "
            f"path under {cwd} (its working directory), an absolute one as written. Copy "
            f"them from there (scp {host}:{cwd}/<path> .)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


async def _copy_file(transport: Transport, remote: str, target: Path, size: int,
                     progress: Callable[[str], None]) -> tuple[int, int]:
    """Append the host file's missing bytes to ``target`` (.part); (copied, resumed)."""
    resumed = target.stat().st_size if target.exists() else 0
    if resumed > size:
        target.unlink()
        resumed = 0
    offset = resumed
    with open(target, "ab") as out:
        while offset < size:
            count = min(CHUNK_BYTES, size - offset)
            command = (f"tail -c +{offset + 1} {shell_path(remote)} | head -c {count} | base64")
            done = await transport.run(command, check=True, timeout=CHUNK_TIMEOUT_S)
            data = base64.b64decode(done.stdout)
            if len(data) != count:
                raise CorralError(f"{transport.host.name}: {remote} changed while it was "
                                  f"fetched (got {len(data)} of {count} bytes at {offset})")
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            offset += count
            progress(f"{target.name.removesuffix('.part')}: {offset}/{size} bytes")
    return offset - resumed, resumed


def _load_manifest(path: Path) -> dict[str, str]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


async def fetch_results(config: ClusterConfig, pool: HostPool, info: RunInfo, *,
                        what: Literal["final", "checkpoint"] = "final",
                        progress: Callable[[str], None] = lambda _: None) -> Fetched:
    """Copy the run's final model (or newest checkpoint) into ``fetched/``, verified."""
    host = source_host(config, info)
    remote_path, local_name = source_path(config, info, what)
    transport = await pool.get(host)
    files = await manifest(transport, remote_path)
    if not files:
        raise CorralError(f"nothing at {remote_path} on {host}: "
                          f"{_nothing_hint(config, info, what, host)}", title="nothing to fetch")
    base = local_run_dir(config, info.run_id) / RunLayout.FETCHED
    base.mkdir(parents=True, exist_ok=True)
    record = base / f".manifest-{what}.json"
    known = _load_manifest(record)
    record.write_text(json.dumps({f.name: f.sha256 for f in files}), encoding="utf-8")
    single = len(files) == 1 and files[0].name == local_name
    copied = resumed = 0
    for file in files:
        final = base / local_name if single else base / local_name / file.name
        if not final.resolve().is_relative_to(base.resolve()):
            raise CorralError(f"{host} listed {file.name!r}, outside the run's directory")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and _sha256(final) == file.sha256:
            continue
        part = final.with_name(final.name + ".part")
        if known.get(file.name) != file.sha256 and part.exists():
            part.unlink()  # the host's file changed since the interrupted fetch
        remote = remote_path if single else f"{remote_path}/{file.name}"
        done, kept = await _copy_file(transport, remote, part, file.size, progress)
        copied, resumed = copied + done, resumed + kept
        if _sha256(part) != file.sha256:
            part.unlink()
            raise CorralError(f"{file.name} from {host} does not match its sha256 after the "
                              "copy; it was removed: run the fetch again", title="bad checksum")
        os.replace(part, final)
    record.unlink()
    return Fetched(host=host, directory=base / local_name, files=len(files), bytes=copied,
                   resumed=resumed)
