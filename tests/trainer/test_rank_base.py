"""A rank's number follows cluster.toml's host order (CORRAL_RANK_BASE), not torch's."""

from __future__ import annotations

import os

import pytest

from profiles.user_errors import UsageError
from trainer.dist import rank_info


def test_the_rank_is_the_hosts_base_plus_the_local_rank(monkeypatch) -> None:
    # torch ordered this node first (RANK 0); the launch planned ranks 3.. for its host.
    for key, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "5",
                       "LOCAL_WORLD_SIZE": "2", "CORRAL_RANK_BASE": "3"}.items():
        monkeypatch.setenv(key, value)
    info = rank_info()
    assert (info.rank, info.local_rank, info.world_size) == (4, 1, 5)
    assert os.environ["RANK"] == "4"


def test_without_a_base_torchs_rank_is_kept(monkeypatch) -> None:
    monkeypatch.delenv("CORRAL_RANK_BASE", raising=False)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_info().rank == 2


def test_a_base_that_does_not_fit_the_world_is_refused(monkeypatch) -> None:
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                       "LOCAL_WORLD_SIZE": "2", "CORRAL_RANK_BASE": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError, match="CORRAL_RANK_BASE"):
        rank_info()
