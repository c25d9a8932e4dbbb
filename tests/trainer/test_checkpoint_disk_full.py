"""A checkpoint that meets a full disk: one line naming the host and the folder, the previous
checkpoints untouched. The disk is a small tmpfs mounted in a mount namespace of its own
(needs root and ``unshare``); torch's writer fails mid-file there with its own error and the
``OSError`` 28 one level down the exception chain."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_an_event_that_meets_a_full_disk_names_host_and_folder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.disk_full import DiskFull
    from trainer.event_log import EventWriter
    from trainer.events import StepEvent

    monkeypatch.setenv("CORRAL_HOST", "box-7")
    writer = EventWriter("/dev/full")  # every write: ENOSPC
    fields = {f: 0 for f in StepEvent.__dataclass_fields__ if f not in ("kind",)}
    with pytest.raises(DiskFull) as caught:
        writer.emit(StepEvent(**{**fields, "t": 1.0, "rank": 3}))  # type: ignore[arg-type]
    assert caught.value.message.startswith("disk full on box-7 at /dev: the step event of rank 3")
