"""The culprit, not the victim: which rank's failure ``t`` and ``corral logs --failure`` open,
and which others' errors they label collateral, for each way a rank fails first."""

from __future__ import annotations

import pytest

from remote.records.culprit import collateral_sources, culprit_line, fold_frames
from remote.records.log_search import RunLogLine


def _lines(*spec: tuple[str, int | None, str]) -> list[RunLogLine]:
    return [RunLogLine(host=h, rank=r, number=n, text=t) for n, (h, r, t) in enumerate(spec, 1)]


VICTIM = [("fast", 0, "step 7 loss 2.0"),
          ("fast", 0, "Traceback (most recent call last):"),
          ("fast", 0, '  File "train.py", line 9, in step'),
          ("fast", 0, "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by "
                      "peer [127.0.0.1]:4021"),
          ("fast", None, "E1127 torch/distributed/elastic/api.py:9] failed (exitcode: 1) "
                         "local_rank: 0")]
"""Rank 0 on the first host in host order: its gloo error follows from the culprit's end."""

EXCEPTION = [("medium", 1, "step 7 loss 2.1"),
             ("medium", 1, "Traceback (most recent call last):"),
             ("medium", 1, "ValueError: bad batch"),
             ("medium", None, "failed (exitcode: 1) local_rank: 0")]
SIGKILL = [("medium", 1, "step 7 loss 2.1"),  # killed mid-step: nothing of its own
           ("medium", None, "failed (exitcode: -9) local_rank: 0 (pid: 41) of binary: python"),
           ("medium", None, "Signal 9 (SIGKILL) received by PID 41")]
HANG = [("medium", 1, "step 7 loss 2.1"),  # stuck in its step: no error at all
        ("slow", 2, "Traceback (most recent call last):"),
        ("slow", 2, "RuntimeError: Wait timeout after 30000ms (gloo)")]
TIMEOUT_VICTIM = [("fast", 0, "Traceback (most recent call last):"),
                  ("fast", 0, "torch.distributed.DistBackendError: [Rank 0] Watchdog caught "
                              "collective operation timeout: WorkNCCL(SeqNum=4) ran for 600s")]


VICTIMS = ["fast:0", "fast:launcher"]
"""Rank 0's gloo error and its launcher's report of it."""
OOM_KILL = [("medium", 1, "step 7 loss 2.1"),  # the kernel's OOM killer: SIGKILL, no words
            ("medium", None, "failed (exitcode: -9) local_rank: 0 (pid: 41) of binary: python")]


@pytest.mark.parametrize(("case", "culprit", "opens", "collateral"), [
    ("an exception", EXCEPTION, "medium:1 Traceback (most recent call last):", VICTIMS),
    ("a SIGKILL", SIGKILL, "medium:launcher failed (exitcode: -9)", VICTIMS),
    ("an out-of-memory kill", OOM_KILL, "medium:launcher failed (exitcode: -9)", VICTIMS),
    ("a hang", HANG, "medium:1 step 7 loss 2.1", [*VICTIMS, "slow:2"]),
])
def test_the_recorded_culprit_is_opened_and_the_victims_are_collateral(
        case: str, culprit: list[tuple[str, int | None, str]], opens: str,
        collateral: list[str]) -> None:
    lines = _lines(*VICTIM, *culprit)  # host order: the victim's traceback comes first
    index = culprit_line(lines, "medium", 1)
    assert index is not None, case
    assert lines[index].line.startswith(opens), case
    assert collateral_sources(lines, index) == collateral, case


def test_without_a_recorded_culprit_the_first_error_of_its_own_is_opened() -> None:
    lines = _lines(*VICTIM, *TIMEOUT_VICTIM, *EXCEPTION)
    index = culprit_line(lines)
    assert index is not None
    assert lines[index].line == "medium:1 Traceback (most recent call last):"
    assert collateral_sources(lines, index) == VICTIMS  # both of rank 0's tracebacks follow
    victims_only = _lines(*VICTIM)
    assert culprit_line(victims_only) == 1  # nothing better: the first failure
    assert culprit_line(_lines(("fast", 0, "step 1 loss 2.0"))) is None


def test_a_culprit_with_no_line_at_all_falls_back_to_the_logs_alone() -> None:
    lines = _lines(*VICTIM, *EXCEPTION)
    index = culprit_line(lines, "gone", 5)  # its host's log was never copied
    assert index is not None and lines[index].source == "medium:1"


def test_runpy_and_corrals_own_frames_fold_out_of_the_culprits_last_lines() -> None:
    said = ["Traceback (most recent call last):",
            '  File "/usr/lib/python3.12/runpy.py", line 198, in _run_module_as_main',
            '    return _run_code(code, main_globals, None,',
            '  File "/usr/lib/python3.12/runpy.py", line 88, in _run_code',
            "    exec(code, run_globals)",
            '  File "/opt/corral/trainer/launch.py", line 40, in <module>',
            "    main()",
            '  File "/home/ann/train.py", line 12, in step',
            "    loss = model(batch)",
            "ValueError: bad batch"]
    assert fold_frames(said) == [said[0], "  … 3 frames of runpy and corral", *said[7:]]
    assert fold_frames(said[7:]) == said[7:]  # the user's own frames stay
