"""The runs (slow tier) of what ``tests/trainer/test_active_groups.py`` tests: the process groups
of active sets: by what their members can use, made where the policy decides, their making
timed, at most ``MAX_GROUPS`` kept (the oldest destroyed), none for a set of one rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from trainer_runs import start_group

from trainer.step.exchange import MAX_GROUPS, ActiveSet
from trainer.step.flat_collectives import ALONE

WORLD = 4


SPLITS = [(4, 4, 0, 0), (4, 0, 4, 0), (0, 4, 4, 0), (4, 0, 0, 4), (0, 4, 0, 4), (0, 0, 4, 4),
          (4, 4, 4, 0), (0, 8, 0, 0), (4, 4, 0, 0)]


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    active = ActiveSet(rank=rank, world=WORLD, device=torch.device("cpu"))
    kept, sums = [], []
    for split in SPLITS:
        active.prepare(split)
        kept.append(len(active._groups))
        group = active.group(split)
        if split[rank] and group is not ALONE:  # the set's group works
            value = torch.ones(1)
            dist.all_reduce(value, group=group)
            sums.append(int(value.item()))
    torch.save({"kept": kept, "sums": sums, "made": dict(active.made_s),
                "alone": active.group((0, 8, 0, 0)) is ALONE}, f"{out}/rank-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # four processes in a gloo group
def test_groups_are_bounded_timed_and_still_work(tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    start_group(_rank, (str(tmp_path / "store"), str(tmp_path)), WORLD)
    results = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(WORLD)]
    for rank, result in enumerate(results):
        assert max(result["kept"]) == MAX_GROUPS  # the oldest destroyed beyond
        assert result["alone"]  # a set of one rank has no group
        members = [sum(1 for b in split if b) for split in SPLITS if split[rank]]
        assert result["sums"] == [m for m in members if m > 1]
        # Seven sets of two or three ranks, each timed as it was made.
        assert len(result["made"]) == 7 and all(s >= 0 for s in result["made"].values())
    printed = capfd.readouterr().out
    # Rank 0 says each making: seven sets, the first made again after it was destroyed.
    assert printed.count("corral trainer: process group of ranks ") == 8
    assert "corral trainer: process group of ranks 0,1 (gloo) made in " in printed
