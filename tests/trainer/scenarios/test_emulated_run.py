"""A cluster launch tells each host only its own slowdown factor; a rank at factor 1 must still
know that the run emulates, so that it reports its own time as the emulated ranks do
(trainer/step/slowdown.py) and the emulated speeds hold against each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from trainer_runs import start_group

from trainer.dist import on_any_rank
from trainer.step.slowdown import emulates

pytestmark = pytest.mark.slow  # two processes in a gloo group


def _rank(rank: int, store: str, out: str, factors: tuple[float, float]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    own = (factors[rank],)  # as a cluster launch gives each host its own factor
    told = on_any_rank(emulates(own), torch.device("cpu"))
    Path(out, f"rank-{rank}").write_text(f"{emulates(own)} {told}")
    dist.barrier()  # leave together (see tests/trainer/lowcomm_outer_check.py)
    dist.destroy_process_group()


@pytest.mark.parametrize(("factors", "expected"), [((1.0, 2.0), "True"), ((1.0, 1.0), "False")])
def test_every_rank_knows_whether_any_rank_emulates(
        tmp_path: Path, factors: tuple[float, float], expected: str) -> None:
    start_group(_rank, (str(tmp_path / "store"), str(tmp_path), factors), 2)
    seen = [(tmp_path / f"rank-{r}").read_text().split() for r in (0, 1)]
    assert [own for own, _ in seen] == [str(f != 1.0) for f in factors]  # each knows its own
    assert [told for _, told in seen] == [expected, expected]


def test_without_a_process_group_a_rank_has_only_its_own_factor() -> None:
    assert not dist.is_initialized()
    assert on_any_rank(True, torch.device("cpu")) is True
    assert on_any_rank(False, torch.device("cpu")) is False
