"""The runs (slow tier) of what ``tests/remote/test_task_code.py`` tests: [run] task / task_options
/ code: checked when cluster.toml is read, the user's folder pushed content-addressed with the
trainer, and the flags that reach every host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.remote.test_task_code import _check


@pytest.mark.slow  # the real pre-flight check, three times: interpreters importing the LLM stack
async def test_check_names_a_host_without_the_llm_packages(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    found = await _check(tmp_path, 'task = "causal_lm"', sys.executable)
    assert len(found) == 1 and found[0].ok and "transformers 5" in found[0].detail
    # An interpreter without them (Debian's own python3 here) gets the pip line that fixes it.
    bare = "/usr/bin/python3"
    if not Path(bare).exists() or subprocess.run([bare, "-c", "import peft"]).returncode == 0:
        pytest.skip("no interpreter without peft on this machine")
    missing = await _check(tmp_path, 'task = "causal_lm"', bare)
    assert len(missing) == 1 and not missing[0].ok
    assert "needs transformers, peft" in missing[0].detail
    assert missing[0].hint.endswith(f"on a: {bare} -m pip install 'transformers>=5.0,<6' "
                                    "'peft>=0.17,<1'")
    # The image task needs neither: no packages item at all.
    assert await _check(tmp_path, 'task = "image"', bare) == []
