"""A corral process's imports run with the cyclic garbage collector paused (``trainer.gc_pause``):
no collection walks torch's objects while they are made, and afterwards they are frozen, out of
every later collection's way. The launcher's and the rank's entry points import torch so."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import trainer.__main__ as rank_entry
import trainer.launcher as launcher_entry
from trainer.launch_contract import LAUNCHER_PID_ENV
from trainer.membership.contract import MEMBERSHIP_PORT_ENV

REPO = Path(__file__).resolve().parents[2]

IMPORT_TORCH = """
import gc, json, sys
starts = []
gc.callbacks.append(lambda phase, info: phase == "start" and starts.append(info["generation"]))
frozen_before = gc.get_freeze_count()
if sys.argv[1] == "paused":
    from trainer.gc_pause import collector_paused
    with collector_paused():
        before_import = len(starts)  # importing gc_pause itself may have run one
        import torch
        during_import = len(starts) - before_import
else:
    before_import = len(starts)
    import torch
    during_import = len(starts) - before_import
# Counted before anything else allocates: once the collector is on again, Python 3.12's may run
# at the next allocation, for what was allocated while it was paused.
print(json.dumps({"collections": during_import, "frozen": gc.get_freeze_count() - frozen_before,
                  "collector_on": gc.isenabled()}))
"""


def _import_torch(how: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", IMPORT_TORCH, how], cwd=REPO, check=True,
                          capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_importing_torch_with_the_collector_paused_runs_no_collection_and_freezes_it() -> None:
    default, paused = _import_torch("default"), _import_torch("paused")
    # The premise: left alone, the collector runs again and again while torch is imported.
    assert default["collections"] > 10 and default["frozen"] == 0, default
    # Paused: not once; then what the import made (over a hundred thousand objects) is frozen,
    # and the collector is on again for what the process does next.
    assert paused["collections"] == 0, paused
    assert paused["frozen"] > 100_000 and paused["collector_on"] is True, paused


def test_a_collector_that_was_off_stays_off_and_the_block_can_raise() -> None:
    import gc

    from trainer.gc_pause import collector_paused

    was_on = gc.isenabled()
    try:
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller had turned it off: not turned on behind its back
        gc.enable()
        with pytest.raises(ImportError), collector_paused():
            raise ImportError("no module named what the block imported")
        assert gc.isenabled()  # on again after a failed import too
    finally:
        (gc.enable if was_on else gc.disable)()


@contextlib.contextmanager
def _recorded(entered: list[str], name: str) -> Iterator[None]:
    entered.append(name)
    yield


def test_the_launcher_and_a_rank_import_torch_inside_the_pause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[str] = []
    import torch.distributed.run

    import trainer.train

    # The launcher: torch's launcher is imported inside the pause, then run (here, a stand-in).
    monkeypatch.setattr(launcher_entry, "collector_paused", lambda: _recorded(entered, "launcher"))
    monkeypatch.setattr(torch.distributed.run, "main", lambda: entered.append("torchrun"))
    monkeypatch.setattr(launcher_entry, "_wait_longer_when_stopped", lambda agent: None)
    monkeypatch.delenv(MEMBERSHIP_PORT_ENV, raising=False)
    # The launcher puts its pid where its ranks look for it: this process's, undone afterwards
    # (a later test's rank in this process would take it for its launcher's, and end).
    monkeypatch.setenv(LAUNCHER_PID_ENV, "")
    assert launcher_entry.main() == 0
    # A rank: the trainer (and with it torch) is imported inside the pause once the flags are
    # known good, then trains (here, a stand-in).
    monkeypatch.setattr(rank_entry, "collector_paused", lambda: _recorded(entered, "rank"))
    monkeypatch.setattr(rank_entry, "die_with_launcher", lambda: None)
    monkeypatch.setattr(trainer.train, "train", lambda config: entered.append("train") or 0)
    assert rank_entry.main(["--steps", "1"]) == 0
    assert entered == ["launcher", "torchrun", "rank", "train"]
