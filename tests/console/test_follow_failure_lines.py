"""What ``corral run`` prints when a rank fails: one line naming the failed host, rank and the
error's last line; the tracebacks and torchrun's failure report stay in the log files."""

from __future__ import annotations

import io

from rich.console import Console

from console.follow import follow_run
from remote.api import HostStatus, LogLine, RankEvent, RunStatus
from tests.fake_runs import FakeRun
from trainer.events import EndEvent

FAILED_RANK = """\
Traceback (most recent call last):
  File "/runs/r/code/crash.py", line 5, in <module>
    raise ValueError("bad batch on purpose")
ValueError: bad batch on purpose"""
"""Rank 1's output (torchrun's ``[rank1]:`` prefix removed, as the tailer does)."""

PEER = """\
Traceback (most recent call last):
  File "/runs/r/code/crash.py", line 6, in <module>
    dist.barrier()
  File "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 83, in wrapper
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer"""
"""A peer's gloo error: it follows from the failed rank (torch may prefix each line with
``[rank2]: ``, as it does on rank 2 below)."""

AGENT = """\
W1123 10:13:39.941000 6445 torch/distributed/elastic/multiprocessing/api.py:1028] Sending \
process 6450 closing signal SIGTERM
E1123 10:13:39.961000 6445 torch/distributed/elastic/multiprocessing/api.py:1002] failed \
(exitcode: 1) local_rank: 1 (pid: 6451) of binary: /venv/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 383, in x
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n\
============================================================
crash.py FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 0)
  exitcode  : 1 (pid: 6451)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================"""
"""torchrun's agent on the failed rank's host, as torch 2.x prints it."""


def lines(host: str, rank: int | None, text: str) -> list[LogLine]:
    return [LogLine(t=1.0, host=host, rank=rank, text=line) for line in text.splitlines()]


async def followed(script: list[object]) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=400, force_terminal=False, color_system=None)
    assert await follow_run(FakeRun("r", script), console=console) == 1  # type: ignore[arg-type]
    return out.getvalue().splitlines()


async def test_a_rank_failure_is_one_line_and_the_tracebacks_stay_in_the_logs() -> None:
    final = RunStatus(t=2.0, run_id="r", state="failed", failed_host="b", failed_rank=1,
                      detail="b rank 1 exited with status 1 without finishing: ValueError: "
                      "bad batch on purpose\n[b rank 1] ValueError: bad batch on purpose")
    printed = await followed([
        *lines("a", 0, "loading the data"), *lines("b", 1, FAILED_RANK),
        *lines("a", 0, PEER), *lines("b", None, AGENT),
        *lines("c", 2, "\n".join(f"[rank2]: {line}" for line in PEER.splitlines())),
        RankEvent(host="b", event=EndEvent(t=1.5, rank=1, step=0, status="failed",
                                           error="ValueError: bad batch on purpose")),
        HostStatus(t=1.6, host="b", state="failed", detail="launcher status 1"), final])
    assert "a:0 | loading the data" in printed  # the ranks' own output still shows
    assert [line for line in printed if "bad batch" in line] == [
        "run r: failed (first failure: b rank 1): b rank 1 exited with status 1 without "
        "finishing: ValueError: bad batch on purpose"]
    for left_out in ("Traceback", "ChildFailedError", "Connection closed", "====", "exitcode",
                     "closing signal"):
        assert not [line for line in printed if left_out in line], (left_out, printed)
    # A line after a traceback is shown again.
    later = await followed([*lines("a", 0, PEER + "\nsaving the model"), final])
    assert "a:0 | saving the model" in later


async def test_a_full_disk_is_said_once() -> None:
    said = "disk full on a at /runs/r/checkpoints: writing step 3; free space there and resume"
    printed = await followed([
        *lines("a", 0, f"corral trainer: disk full: {said}"),
        *lines("a", 1, f"corral trainer: disk full: {said}"),
        *[RankEvent(host="a", event=EndEvent(t=1.0, rank=rank, step=3, status="failed",
                                             error=f"disk full: {said}")) for rank in (0, 1)],
        RunStatus(t=2.0, run_id="r", state="failed", failed_host="a", failed_rank=0,
                  detail=f"a rank 0 failed: disk full: {said}\n"
                         f"[a rank 0] corral trainer: disk full: {said}")])
    assert len([line for line in printed if "disk full on a" in line]) == 1, printed
