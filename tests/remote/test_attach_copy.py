"""The local copy behind ``attach``: a line is either saved in it or sent again, never both."""

from __future__ import annotations

from pathlib import Path

from remote.records.collected import CollectedCopy

PATH = "metrics/rank-0.jsonl"


def test_lines_copied_after_the_last_save_are_cut_back_and_sent_again(tmp_path: Path) -> None:
    copy = CollectedCopy(tmp_path, "h")
    copy.append(PATH, "one", 4)
    copy.append(PATH, "two", 8)
    copy.save()
    copy.append(PATH, "three", 14)  # copied, but the follower died before saving
    copy.close()
    assert (tmp_path / "collected" / "h" / PATH).read_text() == "one\ntwo\nthree\n"

    again = CollectedCopy(tmp_path, "h")
    assert again.offsets == {PATH: 8}  # the tailer restarts right after "two"
    assert (tmp_path / "collected" / "h" / PATH).read_text() == "one\ntwo\n"
    again.append(PATH, "three", 14)
    again.save()
    again.close()
    assert (tmp_path / "collected" / "h" / PATH).read_text() == "one\ntwo\nthree\n"


def test_a_second_follower_reads_the_offsets_but_leaves_the_copy_alone(tmp_path: Path) -> None:
    first = CollectedCopy(tmp_path, "h")
    first.append(PATH, "one", 4)
    first.save()
    first.append(PATH, "two", 8)
    second = CollectedCopy(tmp_path, "h")
    try:
        assert first.writer and not second.writer
        assert second.offsets == {PATH: 4}
        second.append(PATH, "two", 8)
        second.save()
        first.save()
    finally:
        second.close()
        first.close()
    assert (tmp_path / "collected" / "h" / PATH).read_text() == "one\ntwo\n"
    assert CollectedCopy(tmp_path, "h").offsets == {PATH: 8}
