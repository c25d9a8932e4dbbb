"""Which output lines are noise: what torch and the libraries print on every run, the same
each time, that tells the operator nothing about this run.

The one place that decides it. A noise line stays in the host's log files and in this
machine's copy; ``LogLine.noise`` carries the verdict to the front ends: the console's log
panel hides noise lines until asked (and counts them), the headless ``corral run`` follower
leaves them out, and a failure's explanation quotes only the other lines.

A line is noise only when one of the families below matches it *and* it carries no mark of a
failure (``FAILURE_MARKS``): an error, a traceback or a failed worker always shows, whatever
else the line says. A rank's own output (``print``, a progress bar) matches no family.
"""

from __future__ import annotations

import re

FAILURE_MARKS = re.compile(r"Traceback|Error\b|Exception\b|FAILED|\bfailed \(exitcode")
"""Never noise: a line naming an error, an exception, a traceback or a failed worker (torch's
own ``... FAILED with no error file`` comes at INFO level, and must still show)."""

TORCH_INFO = re.compile(
    r"^(?:\[rank\d+\]:)?(?:\[?I\d{4} \d\d:\d\d:\d\d[\d.]* (?:\d+ )?"
    r"(?:\S*torch/\S+\.py|[\w.]+\.(?:cpp|cc|h)):\d+\]"
    r"|INFO:(?:torch|c10d)[.:])")
"""torch's own routine INFO log lines: glog-style from its Python files (``I1122
21:47:57.346000 27391 torch/distributed/run.py:747] Using nproc_per_node=1.``) or its C++ ones
(``[I1122 ... socket.cpp:...]``), and the standard ``INFO:name:`` format of a ``torch.*``
logger. Launchers run at ``LOGLEVEL=INFO`` so that the tailer reads torchrun's rendezvous
result; the ranks inherit it. About 45 lines per host per launch (launch configs, rendezvous
result, worker group states): the run's states are shown by corral itself. A script's own
``logging`` lines (``INFO:__main__:Epoch 0 | Loss: 2.31``, ``INFO:root:...``, glog-style
lines from its own files) are not torch's, and show."""

TORCH_W_PREFIX = r"W\d{4} \d\d:\d\d:\d\d\.\d+ \d+ \S*torch/distributed/run\.py:\d+\] "
TORCHRUN_KNOWN_WARNINGS = re.compile(
    rf"^{TORCH_W_PREFIX}(?:\s*|\*+|Setting OMP_NUM_THREADS environment variable .*"
    r"|node_rank is only used for static rdzv_backend.*)$")
"""torchrun's launch warnings that every multi-host corral launch gets: the starred banner
about ``OMP_NUM_THREADS`` (each of its lines: the empty one, the stars, the text; corral sets
the variable from a host's ``threads`` when it has one) and ``node_rank is only used for
static rdzv_backend``, which launchers of runs started before corral used torch's static
rendezvous logged (a run attached to later still shows their logs)."""

C10_KNOWN_WARNINGS = re.compile(
    r"^(?:\[rank\d+\]:)?\[W\d{4} [\d:.]+ [\w.]+:\d+\] "
    r"(?:Warning: find_unused_parameters=True was specified in DDP constructor, but did not "
    r"find any unused parameters"
    r"|\[c10d\] The hostname of the client socket cannot be retrieved)")
"""torch's C++ warnings (``[W1122 21:48:09.681658695 reducer.cpp:1529] Warning: ...``) that
say nothing about a run's result: DDP's note that ``find_unused_parameters=True`` found none
(a Hugging Face script's default; it costs time, not correctness, once per rank), and c10d's
note that a client socket's host name could not be looked up (hosts without reverse DNS)."""

LIBRARY_NOTICES = re.compile(
    r"^Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
"""Import-time notices of optional libraries: bitsandbytes says once per rank that it runs
without the optional ``kernels`` package (its own CPU code is used instead)."""

PYTHON_DEPRECATIONS = re.compile(
    r"^\S*/(?:site|dist)-packages/\S+\.py:\d+: (?:FutureWarning|DeprecationWarning): "
    r"|^\s+warnings\.warn\(")
"""Python's deprecation warnings raised inside installed packages (``.../site-packages/
transformers/training_args.py:1541: FutureWarning: ... is deprecated``), and the indented
source line Python prints under a warning (``  warnings.warn(``): the library's own upgrade
notes, which the user cannot act on in the run. A warning raised in the user's own files, or
of another category (``UserWarning``), is not in this family."""

NOISE_FAMILIES = (TORCH_INFO, TORCHRUN_KNOWN_WARNINGS, C10_KNOWN_WARNINGS, LIBRARY_NOTICES,
                  PYTHON_DEPRECATIONS)
"""Every family of noise lines, each documented above."""
ANY_FAMILY = re.compile("|".join(f"(?:{family.pattern})" for family in NOISE_FAMILIES))
"""The families as one pattern: one match per line (a flood's lines are rank lines). Every
family is anchored at the line's start, so ``match`` finds what ``search`` would, without
trying every position of a long line."""


def is_noise(text: str) -> bool:
    """Whether a rank's or launcher's output line (its rank prefix removed) is noise."""
    # The families first: each is anchored and fails at once on a rank's own line, where the
    # failure marks are searched through the whole line (a flood's lines are all rank lines).
    if not ANY_FAMILY.match(text):
        return False
    return not FAILURE_MARKS.search(text)
