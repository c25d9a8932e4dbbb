"""What a script's relaunch copies from rank 0's host (``remote/run/carry.py``): bounded, with
an error that names the largest files and the fixes, and one log line naming each file, its
size and the hosts it went to."""

from __future__ import annotations

from remote.run.carry import CARRY_LIMIT_BYTES, Carry, carry_line, over_limit
from remote.run.fetch import RemoteFile

MIB = 1 << 20


def _file(name: str, size: int) -> RemoteFile:
    return RemoteFile(name=name, size=size, sha256=name.encode().hex())


def test_a_carry_within_the_limit_goes_and_each_file_counts_once() -> None:
    ckpt = _file("out/ckpt.pt", CARRY_LIMIT_BYTES // 2)
    # two hosts lack the same checkpoint: it is one file of the master's, not two
    carries = [Carry("h1", (ckpt,)), Carry("h2", (ckpt,))]
    assert over_limit("h0", carries) is None


def test_beyond_the_limit_nothing_starts_and_the_error_names_the_largest_files() -> None:
    files = tuple(_file(f"out/part-{i}.bin", (i + 1) * MIB) for i in range(8))
    problem = over_limit("h0", [Carry("h1", files), Carry("h2", files[:2])], limit=20 * MIB)
    assert problem is not None
    assert problem.startswith("h1, h2 lack 8 file(s) that h0 (rank 0's host) wrote")
    assert "36.0 MiB in all, more than the 20.0 MiB" in problem
    named = [f"out/part-{i}.bin ({i + 1}.0 MiB)" for i in (7, 6, 5, 4, 3)]
    assert "; ".join(named) in problem and "part-2.bin" not in problem
    assert "disk the hosts share" in problem


def test_the_log_line_names_each_file_its_size_and_its_hosts() -> None:
    ckpt, log = _file("out/ckpt.pt", 3 * MIB // 2), _file("out/log.txt", 0)
    line = carry_line("h0", [Carry("h1", (ckpt, log)), Carry("h2", (ckpt,))])
    assert line == ("resume: copied from h0 (rank 0's host): out/ckpt.pt (1.5 MiB) to h1, h2; "
                    "out/log.txt (0.0 MiB) to h1")
