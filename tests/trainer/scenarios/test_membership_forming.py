"""The forming of a generation's group (trainer/membership/store.py ``form``) when a member
arrives, publishes its gloo address and stops before it connects (frozen, as the netns run's
member frozen while rank 0 forms): rank 0, gloo's listening side of that pair, has no
connection for its watch to abort, so only the group's timeout while it forms bounds its wait
(gloo waits 5 times it), and the forming fails for the retry without that member."""

from __future__ import annotations

import datetime
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from trainer.membership import store as store_module
from trainer.membership.store import MembershipStore

pytestmark = pytest.mark.slow  # a gloo group is made

PEER = """
import datetime, sys
import torch.distributed as dist
store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), None, False,
                      timeout=datetime.timedelta(seconds=60))
store.add("beat/1", 1)  # it beat once
store.set("ready/1/1", "1")
options = dist.ProcessGroupGloo._Options()
# 127.0.0.2 > rank 0's 127.0.0.1: this member is the pair's connecting side, rank 0 listens.
options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.2")]
options._timeout = datetime.timedelta(minutes=30)
# The default group's store, as init_process_group makes it on rank 0's side.
dist.ProcessGroupGloo(dist.PrefixStore("cpu/", dist.PrefixStore("0/", dist.PrefixStore(
    "gen1", store))), 1, 2, options)
"""


def test_a_member_stopped_before_it_connects_fails_the_forming_within_its_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    short = datetime.timedelta(seconds=1)
    monkeypatch.setattr(store_module, "CONNECT_GROUP_TIMEOUT", short)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # rank 0's gloo address: 127.0.0.1
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    rank0 = MembershipStore("127.0.0.1", port, serve=True)
    rank0.joining = True  # its watch judges from the forming on
    peer = subprocess.Popen([sys.executable, "-c", PEER, str(port)])
    failed: list[BaseException] = []

    def form() -> None:
        try:
            rank0.form(1, (0, 1), 0, "gloo", torch.device("cpu"))
        except RuntimeError as exc:
            failed.append(exc)

    try:
        deadline = time.monotonic() + 60
        while rank0.store.num_keys() < 3:  # its beat, its arrival, its gloo address
            assert time.monotonic() < deadline, "the peer never published its address"
            time.sleep(0.01)
        # Stopped while it waits for rank 0's address (rank 0 has not formed): it never connects.
        peer.send_signal(signal.SIGSTOP)
        # A thread: were it waiting for the group's 30 minutes, the test fails, not hangs.
        forming = threading.Thread(target=form, daemon=True)
        started = time.monotonic()
        forming.start()
        forming.join(timeout=5 * short.total_seconds() + 20)
        assert not forming.is_alive(), "the forming waits for the stopped member's connection"
        assert failed and "connect timeout" in str(failed[0]).lower(), failed  # gloo's
        assert time.monotonic() - started < 5 * short.total_seconds() + 20
        assert rank0.watch is not None and rank0.watch.stale(1)  # seen lost meanwhile
    finally:
        rank0.stop_heartbeat()
        peer.kill()  # SIGKILL ends a stopped process too
        peer.wait()
