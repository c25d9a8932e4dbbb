"""Every number of cluster.toml has a range, checked when the file is read, so for every
command (issue 41 item 5): ``gpus = 10**18`` no longer makes ``export k8s`` run until killed,
``nproc = 10**8`` no MemoryError in ``run --dry-run``; each command ends at once with one line
naming the key. And mutations of the numbers of a real cluster.toml end every command that
reads no host within a deadline, without a traceback."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

from console.cli import main
from remote.config.cluster import HostSection, RunSection, SshSection
from remote.config.value_rules import upper_bounds

COMMAND_DEADLINE_S = 10.0
"""No command may take longer than this on a bad cluster.toml."""

COMMANDS = (["export", "k8s", "--dry-run"], ["run", "--dry-run"], ["status"],
            ["report"])


def cluster(tmp_path: Path, host: str = "", run: str = "", ssh: str = "") -> Path:
    path = tmp_path / "cluster.toml"
    run = run if run.startswith("steps ") else f"steps = 2\n{run}"
    path.write_text(
        f'[cluster]\nname = "t"\nmaster = "h"\nrun_root = "{tmp_path}/runs"\n\n'
        f'[[hosts]]\nname = "h"\naddress = "local"\npython = "{sys.executable}"\n'
        f'workdir = "{tmp_path}/work"\n{host}\n\n[run]\n{run}\n\n[ssh]\n{ssh}\n',
        encoding="utf-8")
    return path


def run_command(path: Path, command: list[str],
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    began = time.monotonic()
    code = main(["-c", str(path), *command])
    took = time.monotonic() - began
    out = capsys.readouterr()
    return code, out.out + out.err, took


@pytest.mark.parametrize(("line", "key"), [("gpus = 1000000000000000000", "gpus"),
                                           ("nproc = 100000000", "nproc"),
                                           ("threads = 10000000", "threads")])
def test_a_huge_host_number_is_named_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    path = cluster(tmp_path, host=line)
    for command in COMMANDS:
        code, said, took = run_command(path, command, capsys)
        assert took < COMMAND_DEADLINE_S, (command, took)
        assert code == 2 and "Traceback" not in said, (command, said)
        assert f"[[hosts]] h, key {key}" in said or f"{key}: must be at most" in said or (
            key in said and "must be at most" in said), (command, said)


def test_every_bounded_key_is_refused_above_its_bound(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    every = {"run": upper_bounds(RunSection), "hosts": upper_bounds(HostSection),
             "ssh": upper_bounds(SshSection)}
    assert every["run"] and every["hosts"] and every["ssh"]
    for section, bounds in every.items():
        for key, high in bounds.items():
            value = int(high) * 10 + 1
            where = {"hosts": "host"}.get(section, section)
            path = cluster(tmp_path, **{where: f"{key} = {value}"})
            code, said, _ = run_command(path, ["export", "k8s", "--dry-run"], capsys)
            assert code == 2 and key in said and "must be at most" in said, (section, key, said)


NUMBER_KEYS = {"host": ["gpus", "nproc", "threads", "micro_batch", "slowdown", "link_gbit",
                        "port"],
               "run": ["steps", "samples", "global_batch", "rebalance_every", "checkpoint_every",
                       "max_restarts", "hang_limit", "seed", "lr", "epochs"],
               "ssh": ["connect_timeout", "keepalive", "max_parallel_connects", "lost_after"]}
VALUES = ["0", "-1", "1", "10**18", "100000000", "1e308", "inf", "-inf", "nan", "1.5", '"x"',
          "true", "[]", "18446744073709551616"]


def test_mutated_numbers_end_every_command_within_its_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chooser = random.Random(41)
    for _ in range(40):
        section = chooser.choice(sorted(NUMBER_KEYS))
        key = chooser.choice(NUMBER_KEYS[section])
        value = chooser.choice(VALUES).replace("10**18", str(10**18))
        line = f"{key} = {value}"
        path = cluster(tmp_path, **{section: line})
        command = chooser.choice(COMMANDS)
        code, said, took = run_command(path, command, capsys)
        assert took < COMMAND_DEADLINE_S, (line, command, took)
        assert code in (0, 1, 2), (line, command, said)
        assert "Traceback" not in said and "MemoryError" not in said, (line, command, said)
        if "cluster.toml is invalid" in said:  # a config error names the key
            assert key in said, (line, command, said)
