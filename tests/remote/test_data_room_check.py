"""``corral check`` fails a host's ``data-sync`` where ``corral run`` would refuse its data
(too little free disk), with the run's own sentence (issue 81, item 5). Through a host's real
shell (``LocalTransport``, a cache of its own)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from remote.checks import data_room
from remote.checks.script_imports import DATA_CHECK
from remote.config.cluster import HostSection
from remote.config.read import parse_cluster
from remote.config.task_code import user_code
from remote.hosts import data_sync
from remote.hosts.transport import LocalTransport
from remote.run.data_push import sync_run_data
from remote.run.lifecycle import LaunchFailed


class _Pool:
    """The one host ``b``, through this machine's shell (an address of its own)."""

    def __init__(self, workdir: Path) -> None:
        self.transport = LocalTransport(HostSection(name="b", address="10.0.0.2",
                                                    python=sys.executable,
                                                    workdir=str(workdir), gpus=0))

    async def gather(self, fn: Callable[[Any], Awaitable[Any]],
                     hosts: list[str] | None = None) -> dict[str, Any]:
        try:
            return {"b": await fn(self.transport)}
        except Exception as exc:  # as HostPool.gather: the host's error is its result
            return {"b": exc}


class _NoMarker:
    """A host that does not see this machine's files (the marker is never found)."""

    def __init__(self, folder: Path) -> None:
        pass

    def pair(self) -> None:
        return None

    def __enter__(self) -> _NoMarker:
        return self

    def __exit__(self, *_: object) -> None:
        pass


async def test_check_fails_the_data_a_host_has_no_room_for_as_the_run_refuses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "train.py").write_text("print('hi')\n")
    (repo / "data" / "big.bin").write_bytes(os.urandom(2**20))
    config = parse_cluster('[cluster]\nname = "s"\n[[hosts]]\nname = "b"\naddress = "x"\n'
                           '[run]\nscript = "train.py"\n', path=repo / "cluster.toml")
    user = user_code(config.run, config.path.parent)
    pool: Any = _Pool(tmp_path / "work")
    monkeypatch.setattr(data_room, "Marker", _NoMarker)
    [fits] = await data_room.data_room_items(config, pool, user)
    assert fits.ok and fits.host == "b" and "1.0 MiB to send" in fits.detail
    # Less free than the data and the margin: the check says what the run refuses.
    # (a GiB above what is free now: the tests beside this one write and delete files)
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(data_sync, "FREE_MARGIN_BYTES", free + 2**30)
    [full] = await data_room.data_room_items(config, pool, user)
    assert full.name == DATA_CHECK and not full.ok
    assert full.detail.startswith("b has ") and "free for 1.0 MiB of data to send" in full.detail
    with pytest.raises(LaunchFailed) as refused:
        async for _ in sync_run_data(pool, config, str(tmp_path / "run"), user):
            pass
    # The same decision, worded the same (the free space itself moves between two readings).
    def worded(text: str) -> str:
        return re.sub(r"-?[\d.]+ MiB (free|to spare)", r"N MiB \1", text)
    assert worded(full.detail) in worded(str(refused.value))
