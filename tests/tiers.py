"""The two test tiers: the fast one (``scripts/test.sh --fast``) and the slow one.

The tier is the folder: the slow tier is each area's ``scenarios/`` folder (``SCENARIOS``),
whose every test ``tests/conftest.py`` marks ``slow``; a slow test anywhere else stops the
collection (``misplaced``). What makes a test slow besides its folder: a ``*_sshd.py`` or
``*netns*.py`` file, or the ``sshd_cluster`` or ``box`` fixture (marked ``sshd``/``netns`` and
``slow``), the ``gpu``, ``serial`` and ``alone`` marks, or ``slow`` written by hand.

A fast test that starts torchrun (or the trainer tests' rank spawner), sshd or a namespace
fails, naming the command
(``slow_tier_command``): the fast tier stays fast by construction, not by review.

``scripts/test.sh`` runs the tests one more at a time than the machine has cores (pytest-xdist:
three on two cores), except those marked ``serial`` by hand, which run afterwards one at a time:
every test whose verdict rests on measured speed (throughput comparisons, balancer moves, step
times judged). The type check and the torch matrix's builds finish beside them in the idle CPU
group (``scripts/lowest.sh``: a waking test process takes its core back at once), except beside
those marked ``alone``, which run last, with nothing at all beside them: a verdict that compares
throughput across runs (the idle work may end between them) or a rank pinned to its core against
the emulated speed of another (the idle work shares the machine's caches with it; it moved such a
ratio from at least 1.5 to 1.37, docs/benchmarks/ci-time.md "CI's time, round 6: what runs beside
the tests"). Tests of wall-clock limits (a hang limit, a lost host, a link cut past a silence
limit) run in the parallel phase: their limits and run lengths leave room for the tests beside them
(each passed twice beside two heavy test files, docs/benchmarks/ci-time.md "The full suite from a
clean clone (issue 39)").
Netns tests run in parallel like the rest: each box has
namespaces, a bridge and veths named after its process and nothing in the root namespace, so
two boxes never meet. A serial test is in the slow tier, so ``--fast`` is one parallel run
(two workers).

The torch matrix: besides the pinned torch, ``scripts/test.sh`` runs the fast tests of
``TORCH_MATRIX_PATHS`` (the packages that run on torch: the trainer and the profiles, and the
few tests of the console side that call into them with torch) and the tests marked
``torch_matrix`` (the files in ``TORCH_MATRIX_FILES``: exactness, resume and micro-batches, the
trainer's promises that rest most on torch's own behaviour) on each release of
``trainer.compat.TESTED_TORCH``, the floor and the newest (``scripts/torch_matrix.sh``). The
console and the SSH layer import no torch (``tests/test_layering.py`` holds that), so their
other tests would only run again unchanged.
"""

from __future__ import annotations

import contextlib
import shlex
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

SSHD_FIXTURES = {"sshd_cluster"}
NETNS_FIXTURES = {"box"}
TORCH_MATRIX_FILES = {"test_trainer_exactness.py", "test_trainer_resume.py",
                      "test_micro_batch.py"}
"""The slow test files also run on the floor and the newest torch (marked ``torch_matrix``)."""
TORCH_MATRIX_PATHS = ("tests/trainer", "tests/profiles", "tests/test_bench_flags.py",
                      "tests/remote/test_task_code.py")
"""Where the torch matrix looks for tests (its fast ones and those marked ``torch_matrix``):
the tests of the code that runs on torch. ``test_task_code.py`` loads task files, which
import torch; the bench flags train small models."""


SCENARIOS = "scenarios"
"""The folder of each area's slow tier (``tests/remote/scenarios``, ``tests/trainer/scenarios``,
...): whole runs, every test in it slow. Every other test file is a unit test."""


def tier_markers(path: str, fixtures: Collection[str], *, gpu: bool,
                 serial: bool = False, alone: bool = False) -> list[str]:
    """The markers a test gets from its file's folder and name, the fixtures it uses and its
    gpu, serial and alone marks (an alone test is serial; a serial test is slow: the fast tier
    runs in parallel throughout), and ``torch_matrix`` for the files of ``TORCH_MATRIX_FILES``."""
    markers = ["serial"] if alone else []
    serial = serial or alone
    file_name = Path(path).name
    if file_name.endswith("_sshd.py") or SSHD_FIXTURES & set(fixtures):
        markers.append("sshd")
    if "netns" in file_name or NETNS_FIXTURES & set(fixtures):
        markers += ["netns", "sshd"]
    if markers or gpu or serial or SCENARIOS in Path(path).parts:
        markers.append("slow")
    if file_name in TORCH_MATRIX_FILES:
        markers.append("torch_matrix")
    return markers


def misplaced(tests: Sequence[tuple[str, str, bool]]) -> list[str]:
    """The slow tests outside a ``scenarios`` folder, from ``(node id, path, slow)`` each: the
    tier is the folder, so a test that starts runs belongs in its area's scenarios."""
    return [node for node, path, slow in tests if slow and SCENARIOS not in Path(path).parts]


SPAWNER = "spawn_ranks.py"
"""The trainer tests' launcher of several ranks without torch's agent (``tests/trainer``)."""
WARM_SPAWNER = "warm_spawner.py"
"""The process each test worker forks ``SPAWNER``'s launches and lone ranks from."""
in_fast_test = False
"""True while a fast-tier test runs (``tests/conftest.py``): the trainer tests then start every
launch as a process of its own, which the guard on ``subprocess.Popen`` sees, and none from the
warm spawner (``tests/trainer/trainer_runs.py``: ``run_launcher``)."""


def _launches_ranks(words: Sequence[str]) -> str | None:
    """What a Python interpreter (not a stand-in that records its arguments) is told to run
    that starts ranks: torchrun, or the tests' own spawner of several ranks."""
    for interpreter, word, nxt in zip(words, words[1:], words[2:], strict=False):
        if not Path(interpreter).name.startswith("python"):
            continue
        if word == "-m" and nxt == "torch.distributed.run":
            return "torchrun"
        if Path(word).name in (SPAWNER, WARM_SPAWNER):
            return Path(word).name
    return None


def slow_tier_command(args: object) -> str | None:
    """What in a command line belongs to the slow tier (torchrun, sshd, namespaces), if any."""
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    first = Path(words[0]).name if words else ""
    if first in ("torchrun", "sshd", "unshare"):
        return first
    if first == "ip" and "netns" in words[1:3]:
        return "ip netns"
    if first == "sh" and "-c" in words[:-1]:  # a local host's script: look inside it
        with contextlib.suppress(ValueError):
            words = shlex.split(words[words.index("-c") + 1].replace(";", " ; "))
    return _launches_ranks(words)


LONGEST_MODULES = ("test_quickstart.py", "test_script_ranks_local.py",
                   "test_hf_integration_runs.py", "test_causal_lm_exactness.py",
                   "test_tracking_demo.py", "test_script_run_local.py", "test_lowcomm.py",
                   "test_netns_fresh.py", "test_containers_podman.py")
"""The test files that take longest (over 1.5 minutes each in ``--durations``,
docs/benchmarks/ci-time.md
"The full suite from a clean clone"): handed out first, longest first."""


def heaviest_first(modules: Sequence[str], slow: Sequence[bool]) -> list[int]:
    """The tests' running order, as indices: ``LONGEST_MODULES``, then the modules with the
    most slow tests, then the rest; each module's tests together in their own order. The
    parallel phase hands whole modules to its workers in this order (``--dist loadscope
    --no-loadscope-reorder``): a long module handed out last would leave the other workers idle
    while it runs, so the quick ones come last and fill the gaps."""
    slow_tests = Counter(module for module, is_slow in zip(modules, slow, strict=True)
                         if is_slow)
    first_seen: dict[str, int] = {}
    for index, module in enumerate(modules):
        first_seen.setdefault(module, index)

    def rank(module: str) -> int:
        name = Path(module).name
        return LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)

    return sorted(range(len(modules)), key=lambda i: (
        rank(modules[i]), -slow_tests[modules[i]], first_seen[modules[i]], i))
