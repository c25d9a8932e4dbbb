"""No recorded run crashes a command (issue 41 item 5): a ``run.json`` holding ``[]``,
``null``, a string for a number or a wrong shape is named and skipped by ``status``,
``report``, ``attach`` and ``stop``: no traceback, one line naming the file and the key."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from console.cli import main
from remote.records.runs import record_problem

GOOD = {"run_id": "t-1", "cluster": "t", "state": "completed", "started": 1.0,
        "hosts": ["h"], "ended": 2.0}
BAD: dict[str, object] = {
    "a list": [],
    "null": None,
    "started is a string": {**GOOD, "started": "x"},
    "hosts is a number": {**GOOD, "hosts": 3},
    "a pgid is a string": {**GOOD, "pgids": {"h": "1"}},
    "no state": {k: v for k, v in GOOD.items() if k != "state"},
    "ranks are strings": {**GOOD, "ranks": {"h": ["0"]}},
    "port is true": {**GOOD, "port": True},
    # Issue 59: numbers that parse but mean nothing, and nesting, crashed every command.
    "started is NaN": {**GOOD, "started": float("nan")},
    "started is 1e300": {**GOOD, "started": 1e300},
    "started is -1e18": {**GOOD, "started": -1e18},
    "ended is infinite": {**GOOD, "ended": float("inf")},
    "a pgid is 0": {**GOOD, "pgids": {"h": 0}},
    "a pgid is -1": {**GOOD, "pgids": {"h": -1}},
    "port is 70000": {**GOOD, "port": 70000},
    "a rank is negative": {**GOOD, "ranks": {"h": [-1]}},
}
RAW = {
    # Deeper than any parser's recursion: raw text (json.dumps cannot write it).
    "deep nesting": '{"run_id": "t-1", "cluster": "t", "state": "completed", "started": 1.0, '
                    '"hosts": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "3 MiB": json.dumps({**GOOD, "detail": "x" * (3 << 20)}),
}
"""Records as raw text; "endless" is a ``run.json`` that never ends (a link to /dev/zero)."""


def cluster(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "t"\nmaster = "h"\nrun_root = "{tmp_path}/runs"\n\n'
                    f'[[hosts]]\nname = "h"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work"\n\n[run]\nsteps = 2\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("what", [*sorted(BAD), *RAW, "endless"])
def test_a_bad_record_is_named_and_skipped_by_every_command(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cluster(tmp_path)
    run_dir = tmp_path / "runs" / "t-1"
    run_dir.mkdir(parents=True)
    if what == "endless":
        (run_dir / "run.json").symlink_to("/dev/zero")
    else:
        text = RAW[what] if what in RAW else json.dumps(BAD[what])
        (run_dir / "run.json").write_text(text, encoding="utf-8")
    assert what not in BAD or record_problem(BAD[what]) is not None
    for command in (["status"], ["report"], ["report", "t-1"], ["attach", "t-1", "--headless"],
                    ["stop", "t-1"]):
        began = time.monotonic()
        code = main(["-c", str(path), *command])
        took = time.monotonic() - began
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err, (command, out)
        assert took < 10, (command, took)
        said = out.out + out.err
        if command != ["status"]:  # no run to act on: the bad file and its problem named
            assert code != 0, (command, out)
        assert str(run_dir / "run.json") in said and "is not a run record" in said, command


def test_a_sound_record_has_no_problem() -> None:
    assert record_problem(GOOD) is None
