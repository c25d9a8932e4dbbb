"""A restarted Hugging Face script resumes from the newest checkpoint every rank finished saving
(``trainer/integrations/hf_checkpoints.py``): a rank stopped while saving leaves a folder
``get_last_checkpoint`` would pick and that cannot be loaded."""

from __future__ import annotations

from pathlib import Path

from trainer.integrations.hf_checkpoints import SavedHere, complete, mark_saved, saved_here


def save(out: Path, step: int, ranks: tuple[int, ...]) -> str:
    """``checkpoint-STEP`` in ``out``, with the marks of ``ranks`` (those that finished it)."""
    checkpoint = out / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    for rank in ranks:
        mark_saved(str(checkpoint), rank)
    return str(checkpoint)


def resume(asked: dict[int, str | None], outs: dict[int, Path] | None = None
           ) -> dict[int, str | None]:
    """What each rank resumes from, each asked for ``asked[rank]`` (its own ``outs[rank]``
    folder, or one they share), every rank's view gathered as the process group would."""
    views: list[SavedHere | None] = [
        saved_here(Path(path), rank) if path is not None else None
        for rank, path in asked.items()]
    calls: list[int] = []

    def gather(view: SavedHere | None) -> list[SavedHere | None]:
        calls.append(1)
        return views

    chosen = {rank: complete(path, rank, gather) for rank, path in asked.items()}
    assert len(calls) == len(asked)  # every rank takes part, whatever it asked for
    return chosen


def test_a_checkpoint_one_rank_did_not_finish_gives_way_to_the_newest_every_rank_did(
        tmp_path: Path) -> None:
    older = save(tmp_path, 2, (0, 1, 2))
    cut = save(tmp_path, 4, (0, 1))  # rank 2 was stopped while saving its part
    assert resume({0: cut, 1: cut, 2: cut}) == {0: older, 1: older, 2: older}


def test_a_checkpoint_every_rank_finished_is_taken_as_asked(tmp_path: Path) -> None:
    save(tmp_path, 2, (0, 1))
    newest = save(tmp_path, 4, (0, 1))
    assert resume({0: newest, 1: newest}) == {0: newest, 1: newest}


def test_checkpoints_saved_without_the_opt_in_are_taken_as_asked(tmp_path: Path) -> None:
    save(tmp_path, 2, ())
    newest = save(tmp_path, 4, ())
    assert resume({0: newest, 1: newest}) == {0: newest, 1: newest}


def test_no_checkpoint_every_rank_finished_starts_over(tmp_path: Path) -> None:
    cut = save(tmp_path, 2, (0,))
    assert resume({0: cut, 1: cut}) == {0: None, 1: None}


def test_a_rank_with_a_disk_of_its_own_and_no_checkpoints_there_constrains_nothing(
        tmp_path: Path) -> None:
    older = save(tmp_path / "h0", 2, (0,))
    cut = save(tmp_path / "h0", 4, ())  # rank 0 stopped while saving; rank 1 saved nothing
    (tmp_path / "h1").mkdir()
    empty = str(tmp_path / "h1" / "checkpoint-4")
    assert resume({0: cut, 1: empty})[0] == older


def test_ranks_on_disks_of_their_own_agree_on_the_newest_step_all_finished(
        tmp_path: Path) -> None:
    save(tmp_path / "h0", 2, (0,))
    h0 = save(tmp_path / "h0", 4, (0,))
    h1_older = save(tmp_path / "h1", 2, (1,))
    h1 = save(tmp_path / "h1", 4, ())  # rank 1 stopped while saving its step-4 part
    chosen = resume({0: h0, 1: h1})
    assert chosen == {0: str(tmp_path / "h0" / "checkpoint-2"), 1: h1_older}


def test_a_first_run_asks_for_nothing_and_gets_nothing(tmp_path: Path) -> None:
    assert resume({0: None, 1: None}) == {0: None, 1: None}
