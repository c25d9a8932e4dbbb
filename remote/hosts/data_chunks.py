"""Content-defined chunks of a large data file: a changed region is sent as its chunks.

FastCDC (``pyfastcdc``) cuts a file where its content says (a rolling hash), not at fixed
offsets: a region rewritten, inserted or removed moves only the cuts inside it, and every
other chunk keeps its bytes and its id (``blake3`` of its bytes, or ``hashlib.blake2b`` where
``blake3`` is missing). Each host keeps, beside a cached file ``<cache>/<sha256>``, its chunk
list ``<cache>/.chunks/<sha256>`` (``[id, length]`` in file order); a file to send whose chunks
the host holds in any cached file, from any earlier run, is sent as a recipe: the chunks it
lacks from the stream, the rest copied from the host's cached files, the whole checked against
the file's sha256 (hashlib, on the host) before it enters the cache.

Cuts are computed here, never on a host (whose Python may lack both packages). Without
``pyfastcdc`` the sync sends whole files, as before (``corral check`` names the extra).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CHUNKED_MIN_BYTES = 8 << 20
"""A file smaller than this is sent whole: a recipe's round trip costs more than its bytes."""
AVG_CHUNK_BYTES = 64 << 10
"""FastCDC's target chunk size (cuts between a quarter and four times it; Xet uses 64 KB): a
5 MiB region rewritten sends about 5 MiB plus a chunk each side."""
READ_BYTES = 8 << 20
"""What ``chunk_file`` reads at once: the master's memory per file chunked."""


def chunker() -> Callable[[bytes], str] | None:
    """The chunk id function (blake3, else blake2b-256), or None without ``pyfastcdc``."""
    try:
        import pyfastcdc  # noqa: F401  (only whether it is there)
    except ImportError:
        return None
    try:
        from blake3 import blake3
    except ImportError:
        return lambda data: hashlib.blake2b(data, digest_size=32).hexdigest()
    return lambda data: blake3(data).hexdigest()


@dataclass(frozen=True)
class Chunked:
    """A file cut into chunks: its sha256 and ``[id, length]`` per chunk, in file order."""

    sha256: str
    chunks: tuple[tuple[str, int], ...]


@functools.lru_cache(maxsize=32)
def chunk_file(path: Path, size: int, mtime_ns: int) -> Chunked:
    """``path`` (of ``size`` bytes, modified at ``mtime_ns``: the key of this memo, shared by
    every host of a sync, which asks for the files in one order: 32 files kept at most) cut
    by FastCDC, read ``READ_BYTES`` at a time. Raises ``OSError`` (unreadable) or
    ``RuntimeError`` without ``pyfastcdc``."""
    ident = chunker()
    if ident is None:
        raise RuntimeError("pyfastcdc is not installed")
    from pyfastcdc import FastCDC

    cut = FastCDC(AVG_CHUNK_BYTES)
    whole, chunks, tail = hashlib.sha256(), [], b""
    with path.open("rb") as source:
        while block := source.read(READ_BYTES):
            whole.update(block)
            buf = tail + block
            pieces = list(cut.cut_buf(buf))
            # The last piece of a block may end where the block ends, not where the content
            # cuts: it is carried into the next block and cut again.
            for piece in pieces[:-1]:
                chunks.append((ident(bytes(piece.data)), piece.length))
            tail = buf[pieces[-1].offset:] if pieces else b""
    if tail:
        chunks.extend((ident(bytes(p.data)), p.length) for p in cut.cut_buf(tail))
    return Chunked(whole.hexdigest(), tuple(chunks))


_CUTTING = threading.Lock()


def chunks_of(path: Path, size: int, mtime_ns: int) -> Chunked:
    """``chunk_file``, one file at a time: every host's sync asks, the first cuts, the others
    find its result (and the cores stay with the streams)."""
    with _CUTTING:
        return chunk_file(path, size, mtime_ns)


def recipe(chunked: Chunked, found: Mapping[str, tuple[str, int]]
           ) -> tuple[list[list[object]], tuple[tuple[int, int], ...]]:
    """How a host builds the file: ``[source, offset, length]`` pieces in order (``source``
    a cached file's sha256 at whose ``offset`` the bytes lie, or None: the stream's next
    ``length`` bytes) and the ``(offset, length)`` spans of this file the stream carries.
    ``found``: chunk id → ``(sha256, offset)`` where the host holds it. Neighbouring pieces
    are merged."""
    pieces: list[tuple[str | None, int, int]] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    for ident, length in chunked.chunks:
        source, at = found.get(ident, (None, offset))
        if pieces and pieces[-1][0] == source and (
                source is None or pieces[-1][1] + pieces[-1][2] == at):
            pieces[-1] = (source, pieces[-1][1], pieces[-1][2] + length)
        else:
            pieces.append((source, at, length))
        if source is None:
            if spans and sum(spans[-1]) == offset:
                spans[-1] = (spans[-1][0], spans[-1][1] + length)
            else:
                spans.append((offset, length))
        offset += length
    return [list(p) for p in pieces], tuple(spans)


def sidecar(chunked: Chunked) -> list[list[object]]:
    """The chunk list a host keeps beside the cached file (``.chunks/<sha256>``)."""
    return [[ident, length] for ident, length in chunked.chunks]
