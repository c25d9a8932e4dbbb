"""The pushed packages (trainer, profiles) must never pull in the console side, and the console
side never pulls in torch."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("console", "remote", "figures", "textual", "asyncssh")


def test_pushed_packages_import_nothing_from_the_console_side() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "import trainer, profiles\n"
        "for pkg in (trainer, profiles):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"trainer/profiles imported {out}"


def test_the_console_side_imports_no_torch() -> None:
    # What lets the torch matrix run only the tests of the code that runs on torch
    # (tests/tiers.py: TORCH_MATRIX_PATHS): the console and the SSH layer never load it.
    code = (
        "import sys, importlib, pkgutil\n"
        "import console, remote, figures\n"
        "for pkg in (console, remote, figures):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False", "a module of console/, remote/ or figures/ imports torch"
