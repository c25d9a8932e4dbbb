"""``corral stop`` of a low-communication run waits for the round under way (issue 59, item 3):
docs/lowcomm.md promises that a stop takes effect at the round's end, with its checkpoint; the
stop used to kill after its grace (torchrun's own 30 s at most), the round's work lost."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from remote.api import stop_wait
from remote.config.cluster import ClusterConfig
from trainer.run_layout import RunLayout

try:
    import runkit
except ImportError:  # collected as a package
    from tests.remote import runkit  # type: ignore[no-redef]


def _config(tmp_path: Path, round_steps: int) -> ClusterConfig:
    run = dataclasses.replace(runkit.tiny_run(steps=1_000_000), exchange="local",
                              round_steps=round_steps)
    return runkit.local_cluster(tmp_path, ("a", "b"), run)


def test_the_stop_of_a_local_run_waits_for_its_round_and_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path, round_steps=100)
    assert stop_wait(config, "r-1", 10.0) == (10.0, "")  # no round yet: the grace asked for
    events = tmp_path / "runs" / "r-1" / RunLayout.COLLECTED / "a" / "metrics" / "rank-0.jsonl"
    events.parent.mkdir(parents=True)
    events.write_text(json.dumps({
        "event": "round", "v": 1, "t": 5.0, "rank": 0, "step": 200, "first_step": 101,
        "inner_steps": [50, 50], "islands": [[0], [1]], "round_s": 42.0, "exchange_s": 0.5,
        "exchanged_bytes": 1, "bytes_per_sample": 0.1, "round_steps": 100})
        + "\n" + '{"event": "round"}\n')  # and a torn line: skipped
    wait, said = stop_wait(config, "r-1", 10.0)
    assert wait == 94.0
    assert said == ('exchange = "local": the ranks stop at the end of the round under way (the '
                    "last took 42 s), with its checkpoint; waiting up to 94 s before they are "
                    "killed")
    exact = dataclasses.replace(config, run=dataclasses.replace(config.run, exchange="exact"))
    assert stop_wait(exact, "r-1", 10.0) == (10.0, "")
