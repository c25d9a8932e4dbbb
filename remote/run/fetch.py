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
inside = os.path.realpath(sys.argv[2]) if len(sys.argv) > 2 else None
def within(path):
    real = os.path.realpath(path)
    return inside is None or real == inside or real.startswith(inside.rstrip("/") + "/")
if not os.path.exists(root):
    print(json.dumps(None)); sys.exit(0)
if not within(root):
    print(json.dumps({"outside": True})); sys.exit(0)
single = os.path.isfile(root)
paths = [root] if single else sorted(
    os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
out, left_out = [], 0
for path in paths:
    if not os.path.isfile(path) or not within(path):
        left_out += 1
        continue
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    rel = os.path.basename(path) if single else os.path.relpath(path, root)
    out.append([rel, os.path.getsize(path), digest.hexdigest()])
print(json.dumps({"files": out, "single": single, "left_out": left_out}))
"""
"""Run with the host's python: the files under a path (or the file itself), sizes, sha256.
With a second argument, only what lies inside that folder once links are followed: a link
out of it is left out (counted), a path out of it is ``{"outside": true}``."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, as the host described it."""

    name: str
    """Path relative to the fetched directory or file."""
    size: int
    sha256: str


@dataclass(frozen=True)
class Listing:
    """What the host has at a path: its files, whether the path is one file, and how many
    entries under it were left out (a link out of the allowed folder, a special file)."""

    files: list[RemoteFile]
    single: bool
    left_out: int = 0

    def as_target(self) -> Listing:
        """One file's listing named "": it is copied to the target itself, not into it."""
        if not self.single:
            return self
        return Listing(files=[RemoteFile(name="", size=f.size, sha256=f.sha256)
                              for f in self.files], single=True, left_out=self.left_out)


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
    left_out: int = 0
    """Entries the host did not send: links out of the run's directories, special files."""


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
    if not saved and is_script_run(config, info):
        raise CorralError(f"run {info.run_id} ran a script: its checkpoints are its own files; "
                          f"name them: corral fetch {info.run_id} PATH (relative to its working "
                          "directory)", title="no checkpoint")
    if not saved:
        raise CorralError(f"run {info.run_id} recorded no checkpoint; nothing to fetch "
                          "(try --final for the final model)", title="no checkpoint")
    newest = max(saved, key=lambda e: e.step)
    path = newest.path if newest.path.startswith(("/", "~")) else f"{remote_dir}/{newest.path}"
    return path, Path(newest.path).name


async def manifest(transport: Transport, path: str, *, inside: str | None = None) -> Listing | None:
    """The host's description of ``path`` (None when it does not exist); with ``inside``,
    only what lies in that folder (a path out of it: a ``CorralError``)."""
    command = (f"{python_word(transport.host)} -c {shlex.quote(MANIFEST_SCRIPT)} "
               f"{shell_path(path)}" + (f" {shell_path(inside)}" if inside is not None else ""))
    done = await transport.run(command, check=True, timeout=CHUNK_TIMEOUT_S)
    listed = json.loads(done.stdout.strip().splitlines()[-1])
    if listed is None:
        return None
    if listed.get("outside"):
        raise CorralError(f"{path} on {transport.host.name} leads out of the run's directory "
                          f"({inside}); name a path inside it", title="outside the run")
    return Listing(files=[RemoteFile(name=n, size=int(s), sha256=h)
                          for n, s, h in listed["files"]],
                   single=bool(listed["single"]), left_out=int(listed["left_out"]))


def is_script_run(config: ClusterConfig, info: RunInfo) -> bool:
    """Whether the run ran a user's script (its recorded start events say so; a run with none
    recorded: whether cluster.toml runs one)."""
    lines, _ = read_lines(local_run_dir(config, info.run_id))
    starts = [line.event for line in lines if isinstance(line.event, StartEvent)]
    if starts:
        return any(start.task == "script" for start in starts)
    return config.run.script is not None


def _nothing_hint(config: ClusterConfig, info: RunInfo, what: str, host: str) -> str:
    """Why there is nothing to fetch, and what to do."""
    if what != "final":
        return "the checkpoint is gone from the host"
    if not is_script_run(config, info):
        return "the run has not written its final model yet (it lands when the run completes)"
    cwd = RunLayout(run_dir_for(config, info.run_id)).script_cwd(host)
    return (f"a script's run has no final/ unless corral's Hugging Face opt-in wrote it; your "
            f"script's files are in its working directory {cwd} on {host} (rank 0's host): "
            f"`corral fetch {info.run_id}` brings it, `corral fetch {info.run_id} PATH` one "
            "file or folder of it")


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
    listing = await manifest(transport, remote_path)
    if listing is None or not listing.files:
        raise CorralError(f"nothing at {remote_path} on {host}: "
                          f"{_nothing_hint(config, info, what, host)}", title="nothing to fetch")
    base = local_run_dir(config, info.run_id) / RunLayout.FETCHED
    return await copy_listed(transport, remote_path, listing.as_target(), base / local_name,
                             record=base / f".manifest-{what}.json", progress=progress)


async def copy_listed(transport: Transport, remote_path: str, listing: Listing, target: Path,
                      *, record: Path, progress: Callable[[str], None]) -> Fetched:
    """Copy the files ``listing`` names under the host's ``remote_path`` to ``target`` (one
    file's: ``target`` itself, whose name is then empty), each verified, each into a ``.part``
    renamed once its sha256 matches; ``record`` keeps the listing while the copy is under way
    (an interrupted fetch continues only the files that did not change)."""
    host = transport.host.name
    record.parent.mkdir(parents=True, exist_ok=True)
    known = _load_manifest(record)
    record.write_text(json.dumps({f.name: f.sha256 for f in listing.files}), encoding="utf-8")
    copied = resumed = 0
    for file in listing.files:
        final = target / file.name if file.name else target
        if not final.resolve().is_relative_to(target.resolve()):
            raise CorralError(f"{host} listed {file.name!r}, outside the run's directory")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and _sha256(final) == file.sha256:
            continue
        part = final.with_name(final.name + ".part")
        if known.get(file.name) != file.sha256 and part.exists():
            part.unlink()  # the host's file changed since the interrupted fetch
        remote = f"{remote_path}/{file.name}" if file.name else remote_path
        done, kept = await _copy_file(transport, remote, part, file.size, progress)
        copied, resumed = copied + done, resumed + kept
        if _sha256(part) != file.sha256:
            part.unlink()
            raise CorralError(f"{file.name or final.name} from {host} does not match its sha256 "
                              "after the copy; it was removed: run the fetch again",
                              title="bad checksum")
        os.replace(part, final)
    record.unlink()
    return Fetched(host=host, directory=target, files=len(listing.files), bytes=copied,
                   resumed=resumed, left_out=listing.left_out)
