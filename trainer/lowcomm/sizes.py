"""The sizes of the outer exchange's payloads (no torch: ``corral check`` predicts from them
on the console side; the payloads themselves are trainer/lowcomm/compress.py's)."""

from __future__ import annotations

from trainer.settings.run_settings import OuterCompression as Compression

BITS: dict[Compression, int] = {"none": 32, "int8": 8, "int4": 4}
"""Bits per value of the outer exchange's payload, steps left out."""
BLOCK = 256
"""Values per quantisation block (one float32 step each: 1/64 byte a value of overhead)."""



def payload_bytes(numel: int, compression: Compression) -> int:
    """Bytes of one island's payload for ``numel`` values (float32 without compression)."""
    if compression == "none":
        return numel * 4
    blocks = -(-numel // BLOCK)
    return blocks * BLOCK * BITS[compression] // 8 + blocks * 4


def sent_bytes(numel: int, compression: Compression, islands: int) -> int:
    """Bytes each island leader sends in one exchange: a ring all-reduce sends 2(n-1)/n of the
    float32 change, a ring all-gather (n-1) payloads."""
    if islands < 2:
        return 0
    if compression == "none":
        return int(2 * (islands - 1) / islands * payload_bytes(numel, compression))
    return (islands - 1) * payload_bytes(numel, compression)
