"""The runs (slow tier) of what ``tests/remote/test_secrets.py`` tests: a host's ``env`` values
(tokens, passwords) reach its processes but no command line, and a run's files are readable by
the run's user only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from remote.hosts.pool import HostPool
from tests.remote.conftest import SshdCluster
from tests.remote.test_secrets import ENV, SECRET, _shown


@pytest.mark.sshd
def test_host_env_reaches_a_command_over_ssh_but_not_its_command_line(
    sshd_cluster: Callable[..., SshdCluster],
) -> None:
    cluster = sshd_cluster(1)
    config = cluster.config(hosts=[cluster.host("h0", env=ENV)])

    async def go() -> tuple[str, str, str]:
        pool = HostPool(config)
        try:
            return await _shown(await pool.get("h0"))
        finally:
            await pool.aclose()

    cmdline, token, rest = asyncio.run(go())
    assert token == SECRET
    assert "hf_s3cr3t" not in cmdline and rest == "own input"
