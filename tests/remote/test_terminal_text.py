"""Rank output as a terminal would show it (``remote.terminal_text``): a table of what ranks
write (through torchrun's tee, as it reaches a host's launcher log) and what every seat shows."""

from __future__ import annotations

import pytest

from remote.terminal_text import (
    RankScreen,
    ShownLine,
    bar_key,
    fold_ranks,
    plain,
    ranks_label,
    screen_text,
    settle,
    split_ranks,
)

BAR = "epoch 0 rank 1: {p:3d}%|{b:<10}| {n}/40 [00:01<00:01, 17.1it/s, loss=0.3]"


def bar(n: int, rank: int = 1, epoch: int = 0) -> str:
    state = BAR.format(p=n * 100 // 40, b="█" * (n // 4), n=n)
    return state.replace("epoch 0 rank 1", f"epoch {epoch} rank {rank}")


def shown(log: list[str]) -> list[tuple[int | None, str]]:
    """What a file or a pipe shows for these launcher-log lines: every bar at its last state."""
    screen = RankScreen()
    lines = [(line, None) for raw in log for line in screen.feed(raw)]
    return [(line.rank, line.text) for line, _ in settle(lines)]


SCREEN_CASES = [
    ("\rbar 1\rbar 2\rbar 3", "bar 3"),  # a \r run: its latest state
    ("done\r", "done"),  # a trailing \r redraws nothing
    ("\x1b[32mINFO\x1b[0m ok", "\x1b[32mINFO\x1b[0m ok"),  # colours kept
    ("a\tb", "a       b"),  # a tab to the next 8-column stop
    ("\x1b[31mab\x1b[0m\tc", "\x1b[31mab\x1b[0m      c"),  # colours take no column
    ("\x1b[2J\x1b[Hafter a clear", "after a clear"),  # clear screen, cursor home
    ("\x1b]0;my title\x07text", "text"),  # OSC: the window's title
    ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-ended
    ("up\x1b[3A\x1b[2Kdown\x1b[10;5H", "updown"),  # cursor moves, erase line
    ("bell\x07 back\x08space", "bell backspace"),  # C0 controls
    ("\x1b7saved\x1b8\x1bc", "saved"),  # two-byte escapes
]


@pytest.mark.parametrize(("raw", "expected"), SCREEN_CASES)
def test_screen_text(raw: str, expected: str) -> None:
    assert screen_text(raw) == expected


def test_plain_strips_colours_only() -> None:
    assert plain("\x1b[1;31mERROR\x1b[0m x") == "ERROR x"
    assert plain("no colour") == "no colour"


@pytest.mark.parametrize(("text", "key"), [
    (bar(20), "epoch 0 rank 1:"),
    (" 50%|█████     | 5/10 [00:00<00:00, 10.00it/s]", ""),  # Hugging Face's Trainer
    ("Epoch 0:  50%|█████     | 5/10 [00:00<00:00, 10.00it/s, v_num=0]", "Epoch 0:"),
    ("batches: 120it [00:04, 27.3it/s]", "batches:"),  # no total
    ("rank 0: epoch 0 finished", None),
    ("| a | table | row |", None),
    ("loss 50% lower [ok]", None),
])
def test_bar_key(text: str, key: str | None) -> None:
    assert bar_key(text) == key


def test_split_ranks_finds_the_prefix_mid_line() -> None:
    assert split_ranks("[rank1+0]:epoch 0 rank 1:   0%|[rank2+0]:rank 2: done") == [
        (1, "epoch 0 rank 1:   0%|", False), (2, "rank 2: done", True)]
    assert split_ranks("[rank0+3]:[rank0]: Traceback") == [(3, "[rank0]: Traceback", True)]
    assert split_ranks("I1129 launcher") == [(None, "I1129 launcher", True)]
    assert split_ranks("[rank2]:old launch") == [(2, "old launch", True)]


def test_a_bar_is_one_updating_line_per_rank() -> None:
    # torch's tee: every \r ends a line; a state read before its \r gets the next prefix glued
    log = ["[rank1+0]:"] + [f"[rank1+0]:{bar(n)}" for n in range(41)] + ["[rank1+0]:done"]
    assert shown(log) == [(1, bar(40)), (1, "done")]


def test_six_bars_of_forty_are_six_lines() -> None:
    log = [f"[rank{r}+0]:{bar(n, r, e)}" for e in range(2) for n in range(41) for r in range(3)]
    assert len(log) == 246
    assert shown(log) == [(r, bar(40, r, e)) for e in range(2) for r in range(3)]


def test_the_next_line_is_never_glued_to_a_bar_fragment() -> None:
    log = [f"[rank1+0]:{bar(39)}",
           f"[rank1+0]:{bar(40)}[rank2+0]:rank 2: epoch 0 finished",
           "[rank1+0]:rank 1: epoch 0 finished"]
    assert shown(log) == [(1, bar(40)), (2, "rank 2: epoch 0 finished"),
                          (1, "rank 1: epoch 0 finished")]


def test_a_fragment_that_is_no_bar_waits_for_its_line() -> None:
    assert shown(["[rank0+0]:loading[rank1+0]:hello", "[rank0+0]: done"]) == [
        (1, "hello"), (0, "loading done")]


def test_a_bar_the_rank_crashed_in_stays_at_its_last_state() -> None:
    log = [f"[rank1+0]:{bar(n, epoch=1)}" for n in range(21)] + [
        "[rank1+0]:[rank1]: Traceback (most recent call last):",
        "[rank1+0]:[rank1]: ValueError: bad batch 20 on rank 1"]
    assert shown(log) == [(1, bar(20, epoch=1)), (1, "[rank1]: Traceback (most recent call last):"),
                          (1, "[rank1]: ValueError: bad batch 20 on rank 1")]


def test_a_new_bar_with_the_same_description_is_a_new_line() -> None:
    log = [f"[rank0+0]:{bar(n, 0)}" for n in (0, 40, 0, 12)]
    assert shown(log) == [(0, bar(40, 0)), (0, bar(12, 0))]


def test_an_evaluation_bar_inside_a_training_bar_is_its_own_line() -> None:
    train = " {n:2d}%|█         | {n}/100 [00:05<00:45, 2.00it/s]"
    evaluation = " {p:3d}%|█         | {n}/8 [00:01<00:00, 8.00it/s]"
    log = [f"[rank0+0]:{train.format(n=n)}" for n in (49, 50)]
    log += [f"[rank0+0]:{evaluation.format(p=n * 100 // 8, n=n)}" for n in range(9)]
    log += [f"[rank0+0]:{train.format(n=n)}" for n in (51, 52)]
    assert shown(log) == [(0, train.format(n=50)), (0, evaluation.format(p=100, n=8)),
                          (0, train.format(n=52))]


def test_a_plain_line_keeps_its_place_under_an_updating_bar() -> None:
    screen = RankScreen()
    out = [*screen.feed(f"[rank0+0]:{bar(1, 0)}"), *screen.feed("[rank0+0]:eval loss 0.2"),
           *screen.feed(f"[rank0+0]:{bar(2, 0)}")]
    assert out == [ShownLine(0, bar(1, 0), bar=True), ShownLine(0, "eval loss 0.2"),
                   ShownLine(0, bar(2, 0), bar=True, replaces=True)]
    assert [line.text for line, _ in settle((line, None) for line in out)] == [
        bar(2, 0), "eval loss 0.2"]


def test_blank_lines_show_unless_a_bar_left_them() -> None:
    assert shown(["[rank0+0]:a", "[rank0+0]:", "[rank0+0]:b"]) == [(0, "a"), (0, ""), (0, "b")]
    assert shown(["[rank0+0]:a", "[rank0+0]:", f"[rank0+0]:{bar(3, 0)}"]) == [
        (0, "a"), (0, bar(3, 0))]


def test_the_field_scripts_terminal_codes() -> None:
    log = ["[rank0+0]:rank 0: \x1b[32mINFO\x1b[0m colour test end",
           "[rank0+0]:rank 0: col1\tcol2",
           "[rank0+0]:rank 0: \x1b[2J\x1b[Hafter a clear-screen sequence"]
    assert shown(log) == [(0, "rank 0: \x1b[32mINFO\x1b[0m colour test end"),
                          (0, "rank 0: col1    col2"),
                          (0, "rank 0: after a clear-screen sequence")]


def test_identical_lines_of_several_ranks_fold_into_one() -> None:
    items = ["a0", "a1", "b0", "a2", "a0again", "a1again"]
    keys = [(0, "loading data"), (1, "loading data"), (0, "step 1"), (2, "loading data"),
            (0, "loading data"), (1, "loading data")]
    folded = fold_ranks(items, keys)
    assert [(f.item, f.ranks) for f in folded] == [
        ("a0", (0, 1, 2)), ("b0", (0,)), ("a0again", (0, 1))]


def test_launcher_lines_and_bars_never_fold() -> None:
    keys = [(None, "x"), (None, "x"), (0, bar(3, 0)), (1, bar(3, 0))]
    assert len(fold_ranks(range(4), keys)) == 4


@pytest.mark.parametrize(("ranks", "label"), [
    ((0, 1, 2, 3, 4, 5, 6, 7), "ranks 0–7"), ((2, 0), "ranks 0, 2"),
    ((0, 1, 2, 5, 7, 8), "ranks 0–2, 5, 7–8")])
def test_ranks_label(ranks: tuple[int, ...], label: str) -> None:
    assert ranks_label(ranks) == label
