"""The runs (slow tier) of what ``tests/trainer/test_spawn_ranks.py`` tests: the trainer tests'
rank spawner imports the libraries it is asked to once, before the fork, and nothing of
corral's: each rank finds them loaded and the trainer not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_runs import (
    SPAWN_RANKS,
    check,
    rank_env,
    run_launcher,
)
from warm_spawner import run_warm

RANK_SAYS = """\
import json, os, sys
print(json.dumps({"rank": os.environ["RANK"], "world": os.environ["WORLD_SIZE"],
                  "loaded": sorted(n for n in ("colorsys", "trainer", "profiles")
                                   if n in sys.modules)}))
"""


@pytest.mark.slow
def test_preloaded_modules_are_there_in_every_rank_and_corrals_are_not(tmp_path: Path) -> None:
    script = tmp_path / "rank_says.py"
    script.write_text(RANK_SAYS)
    proc = run_launcher([sys.executable, str(SPAWN_RANKS), "--preload", "colorsys", "2",
                         str(script)], env=rank_env(), timeout=120)
    check(proc)
    said = sorted((json.loads(line) for line in proc.stdout.splitlines()),
                  key=lambda seen: seen["rank"])
    assert said == [{"rank": str(r), "world": "2", "loaded": ["colorsys"]} for r in range(2)]


RANK_WHERE = """\
import json, os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(json.dumps({
    "cwd": os.getcwd(), "says": os.environ.get("WARM_SAYS"), "session": os.getsid(0),
    "leader": os.getppid(), "pid": os.getpid(), "split": os.environ.get("CORRAL_SPLIT"),
    "spawner": int(Path(f"/proc/{os.getppid()}/stat").read_text().split(")")[-1].split()[1])}))
if sys.argv[2:] == ["hang"]:
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_warm_launches_take_their_own_directory_environment_and_session(
        tmp_path: Path) -> None:
    script, said = tmp_path / "rank_where.py", tmp_path / "said.json"
    script.write_text(RANK_WHERE)
    for says in ("first", "second"):  # two environments: two warm processes, each as asked
        proc = run_warm(["1", str(script), str(said)], [], cwd=tmp_path,
                        env={**rank_env(), "WARM_SAYS": says}, timeout=120)
        check(proc)
        where = json.loads(said.read_text())
        assert (where["cwd"], where["says"]) == (str(tmp_path), says)
        # The launch's leader is the rank's parent and leads a session of its own, as
        # run_launcher's process would: a stop or a timeout reaches the session.
        assert where["session"] == where["leader"] != os.getsid(0)
    # A lone rank is ``python -m trainer`` as that process would be: bad flags, exit code 2.
    lone = run_launcher([sys.executable, "-m", "trainer", "--split", "a,b"], env=rank_env(),
                        timeout=120)
    assert lone.returncode == 2, lone
    assert "python -m trainer: error: argument --split" in lone.stderr, lone


@pytest.mark.slow
def test_launches_differing_in_corrals_own_variables_share_a_warm_process(
        tmp_path: Path) -> None:
    script, said = tmp_path / "rank_where.py", tmp_path / "said.json"
    script.write_text(RANK_WHERE)
    seen = []
    for split, says in (("6,2,1", "one"), ("9", "one"), ("9", "two")):
        check(run_warm(["1", str(script), str(said)], [], cwd=tmp_path,
                       env={**rank_env(), "CORRAL_SPLIT": split, "WARM_SAYS": says},
                       timeout=120))
        seen.append(json.loads(said.read_text()))
    # Each launch sees its own values; a corral variable alone does not choose the process
    # (no import before the fork reads it), any other variable does.
    assert [(w["split"], w["says"]) for w in seen] == [("6,2,1", "one"), ("9", "one"),
                                                       ("9", "two")]
    assert seen[0]["spawner"] == seen[1]["spawner"] != seen[2]["spawner"]


@pytest.mark.slow
def test_a_warm_launch_past_its_timeout_is_killed_with_its_ranks(tmp_path: Path) -> None:
    script, said = tmp_path / "rank_where.py", tmp_path / "said.json"
    script.write_text(RANK_WHERE)
    with pytest.raises(subprocess.TimeoutExpired):
        run_launcher([sys.executable, str(SPAWN_RANKS), "1", str(script), str(said), "hang"],
                     env=rank_env(), timeout=15)
    where = json.loads(said.read_text())
    deadline = time.monotonic() + 30
    while not (_gone(where["pid"]) and _gone(where["leader"])):
        assert time.monotonic() < deadline, f"still running: {where}"
        time.sleep(0.1)  # polling for a condition with a deadline, not synchronising
