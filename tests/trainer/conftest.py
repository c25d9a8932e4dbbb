"""What the trainer's tests share: three network-namespace hosts (``box``) for the tests whose
ranks run on hosts that can be cut off (the membership and cut-off tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns


@pytest.fixture
def box(tmp_path: Path) -> Iterator[netns.NetnsCluster]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    (tmp_path / "box").mkdir()
    cluster = netns.build(tmp_path / "box", hosts=3)
    try:
        yield cluster
    finally:
        cluster.close()
