"""Issue 19's case as a user meets it: TRL's ``sft.py`` run where the ``trl`` package installed
it (inside site-packages, beside the transformers, accelerate and datasets it imports), on two
local CPU hosts: the import check takes those for installed packages, not the user's own tree,
and the run completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote.api import RunStatus

try:
    from runkit import run_processes
    from test_script_ranks_local import _sft_data
    from test_script_run_local import SLOWDOWNS, config, run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.test_script_ranks_local import _sft_data  # type: ignore[no-redef]
    from tests.remote.test_script_run_local import (  # type: ignore[no-redef]
        SLOWDOWNS,
        config,
        run_to_end,
    )

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


async def test_trls_sft_script_runs_from_where_trl_installed_it(tmp_path: Path) -> None:
    model, pairs = _sft_data(tmp_path)
    import trl

    script = Path(trl.__file__).parent / "scripts" / "sft.py"
    if not script.is_file():
        pytest.skip("this trl ships no scripts/sft.py")
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(model), "--dataset_name", str(pairs),
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--report_to", "none", "--learning_rate", "1e-4"]
    run_id, events = await run_to_end(config(tmp_path, script, args, slowdowns=SLOWDOWNS[:2]))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert (out / "model.safetensors").is_file() or (out / "adapter_model.safetensors").is_file()
    assert run_processes(run_id) == []
