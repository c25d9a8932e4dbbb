"""What a script's relaunch copies from rank 0's host (``remote/run/replicate.py``): bounded, with
an error that names the largest files and the fixes; one log line naming each file, its size
and the hosts it went to; on the host, only what it lacks or what an earlier relaunch copied
and rank 0 wrote again since, never a file of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from remote.hosts.interpreter import last_json
from remote.run.fetch import RemoteFile
from remote.run.replicate import (
    COPY_PY,
    LACKS_PY,
    REPLICA_LIMIT_BYTES,
    HostCopy,
    copies_line,
    over_limit,
)

MIB = 1 << 20


def _file(name: str, size: int) -> RemoteFile:
    return RemoteFile(name=name, size=size, sha256=name.encode().hex())


def test_a_copy_within_the_limit_goes_and_each_file_counts_once() -> None:
    ckpt = _file("out/ckpt.pt", REPLICA_LIMIT_BYTES // 2)
    # two hosts lack the same checkpoint: it is one file of the master's, not two
    copies = [HostCopy("h1", (ckpt,)), HostCopy("h2", (ckpt,))]
    assert over_limit("h0", copies) is None


def test_beyond_the_limit_nothing_starts_and_the_error_names_the_largest_files() -> None:
    files = tuple(_file(f"out/part-{i}.bin", (i + 1) * MIB) for i in range(8))
    problem = over_limit("h0", [HostCopy("h1", files), HostCopy("h2", files[:2])], limit=20 * MIB)
    assert problem is not None
    assert problem.startswith("h1, h2 lack 8 file(s) that h0 (rank 0's host) wrote")
    assert "36.0 MiB in all, more than the 20.0 MiB" in problem
    named = [f"out/part-{i}.bin ({i + 1}.0 MiB)" for i in (7, 6, 5, 4, 3)]
    assert "; ".join(named) in problem and "part-2.bin" not in problem
    assert "disk the hosts share" in problem


def test_the_log_line_names_each_file_its_size_and_its_hosts() -> None:
    ckpt, log = _file("out/ckpt.pt", 3 * MIB // 2), _file("out/log.txt", 0)
    line = copies_line("h0", [HostCopy("h1", (ckpt, log)), HostCopy("h2", (ckpt,))])
    assert line == ("resume: copied from h0 (rank 0's host): out/ckpt.pt (1.5 MiB) to h1, h2; "
                    "out/log.txt (0.0 MiB) to h1")


def _host(code: str, ask: dict[str, object]) -> dict[str, object] | None:
    """One of the host programs, run as a host runs it (``python -S``, the request on stdin)."""
    done = subprocess.run([sys.executable, "-S", "-c", code], input=json.dumps(ask) + "\n",
                          capture_output=True, text=True, check=True, timeout=60)
    return last_json(done.stdout)


def test_a_host_lacks_what_it_has_not_and_a_stale_copy_but_keeps_its_own(tmp_path: Path) -> None:
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    (cwd / "out").mkdir(parents=True)
    cache.mkdir()
    (cwd / "starts.log").write_text("the host's own\n")
    (cwd / "out" / "link.pt").symlink_to(tmp_path / "nowhere")
    record = str(tmp_path / "h1.replicated")
    for sha, text in (("a" * 64, "step 300"), ("b" * 64, "step 400")):
        (cache / sha).write_text(text)

    def lacks(files: list[list[str]]) -> object:
        answer = _host(LACKS_PY, {"cwd": str(cwd), "record": record, "files": files})
        return answer and answer["lacks"]

    files = [["out/ckpt.pt", "a" * 64], ["starts.log", "c" * 64], ["out/link.pt", "d" * 64]]
    assert lacks(files) == ["out/ckpt.pt"]  # its own log and its own (broken) link stay
    _host(COPY_PY, {"cwd": str(cwd), "record": record, "cache": str(cache),
                    "files": [["out/ckpt.pt", "a" * 64]]})
    assert (cwd / "out" / "ckpt.pt").read_text() == "step 300"
    assert (cwd / "out" / "ckpt.pt").stat().st_mode & 0o777 == 0o600
    assert lacks([["out/ckpt.pt", "a" * 64]]) == []  # the same file: nothing to copy
    # rank 0 wrote it again (a second --resume): the earlier copy is replaced...
    assert lacks([["out/ckpt.pt", "b" * 64]]) == ["out/ckpt.pt"]
    _host(COPY_PY, {"cwd": str(cwd), "record": record, "cache": str(cache),
                    "files": [["out/ckpt.pt", "b" * 64]]})
    assert (cwd / "out" / "ckpt.pt").read_text() == "step 400"
    # ...unless this host's script wrote it since: then it is the host's own
    (cwd / "out" / "ckpt.pt").write_text("this host's step 410")
    assert lacks([["out/ckpt.pt", "a" * 64]]) == []
    assert not list(cwd.rglob("*.corral-part")) and not list(tmp_path.glob("*.corral-part"))
