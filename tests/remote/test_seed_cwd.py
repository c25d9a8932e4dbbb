"""A run's working directory gets the launch folder's checkpoints as copies the script may
write again, never replaces what the run wrote, and a relaunch replaces an unwritten copy with
rank 0's newer file (no host resumes from the launch folder's older checkpoint)."""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from remote.hosts.push_ignore import OUTPUT_PATTERNS
from remote.run.replicate import LACKS_PY
from remote.run.seed_cwd import SEED_PY, seed_words


def _seed(monkeypatch: pytest.MonkeyPatch, links: Path, cwd: Path, record: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["-c", str(links), str(cwd), str(record),
                                      json.dumps(list(OUTPUT_PATTERNS))])
    exec(SEED_PY, {"__name__": "__main__"})  # the host's program, in this process


def _lacks(monkeypatch: pytest.MonkeyPatch, cwd: Path, carried: Path, files: list[list[str]],
           capsys: pytest.CaptureFixture[str]) -> list[str]:
    ask = {"cwd": str(cwd), "record": str(carried), "files": files}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(ask) + "\n"))
    exec(LACKS_PY, {"__name__": "__main__"})
    return list(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lacks"])


def test_checkpoints_are_copied_data_linked_and_what_the_run_wrote_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, cwd, hosts = tmp_path / "folder", tmp_path / "cwd", tmp_path / "hosts"
    for rel, text in (("out/ckpt.pt", "old"), ("data/train.bin", "tokens")):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    hosts.mkdir()
    links = hosts / "h1.data"
    links.write_text("".join(f"{folder / rel}\t{rel}\n" for rel in ("out/ckpt.pt",
                                                                     "data/train.bin")))
    record = hosts / "h1.seeded"
    _seed(monkeypatch, links, cwd, record)
    ckpt = cwd / "out" / "ckpt.pt"
    assert not ckpt.is_symlink() and ckpt.read_text() == "old"  # a copy: torch.save may write
    assert (cwd / "data" / "train.bin").is_symlink()
    # An unwritten copy counts as corral's: rank 0's newer checkpoint replaces it on resume.
    assert _lacks(monkeypatch, cwd, hosts / "h1.replicated", [["out/ckpt.pt", "f" * 64]],
                  capsys) == ["out/ckpt.pt"]
    ckpt.write_text("rank 0 wrote this")
    os.utime(ckpt, ns=(1, 1))
    _seed(monkeypatch, links, cwd, record)  # a --resume: the run's own file stays
    assert ckpt.read_text() == "rank 0 wrote this"
    assert _lacks(monkeypatch, cwd, hosts / "h1.replicated", [["out/ckpt.pt", "f" * 64]],
                  capsys) == []  # the host's own file is never replaced


def test_the_seed_command_quotes_every_path() -> None:
    words = seed_words("python3", "~/runs/a b/hosts/h.data", "~/runs/a b/cwd/h",
                       "~/runs/a b/hosts/h.seeded")
    said = shlex.split(words)
    assert said[:3] == ["python3", "-S", "-c"] and said[3] == SEED_PY
    assert said[4:7] == ["$HOME/runs/a b/hosts/h.data", "$HOME/runs/a b/cwd/h",
                         "$HOME/runs/a b/hosts/h.seeded"]
