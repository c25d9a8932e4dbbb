"""What corral's SSH connections put on the wire: no per-packet ``SSH_MSG_IGNORE`` (a CBC
countermeasure; corral offers no CBC cipher), every other packet unchanged."""

from __future__ import annotations

from typing import Any

from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.packet import String

from remote.hosts.ssh import CIPHERS, _without_ignore_packets


class _Connection:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple[bytes, ...], dict[str, Any]]] = []

    def send_packet(self, pkttype: int, *args: bytes, **kwargs: Any) -> None:
        self.sent.append((pkttype, args, kwargs))


def test_the_empty_ignore_before_each_packet_is_dropped_and_nothing_else() -> None:
    conn = _without_ignore_packets(_Connection())  # type: ignore[arg-type]
    conn.send_packet(MSG_IGNORE, String(b""))  # what asyncssh sends before every packet
    conn.send_packet(MSG_CHANNEL_DATA, b"\0\0\0\1", String(b"shard"), handler="chan")
    conn.send_packet(MSG_IGNORE, String(b"keepalive"))  # an ignore with a payload passes
    assert conn.sent == [  # type: ignore[attr-defined]
        (MSG_CHANNEL_DATA, (b"\0\0\0\1", String(b"shard")), {"handler": "chan"}),
        (MSG_IGNORE, (String(b"keepalive"),), {})]


def test_no_cipher_offered_is_cbc_the_mode_the_ignore_packets_protect() -> None:
    assert CIPHERS and not any("cbc" in name for name in CIPHERS)
