"""A tracker's failure is quoted in the follower's warning whole, or cut between words."""

from __future__ import annotations

from remote.records.tracker_process import ERROR_CHARS, error_line


def test_a_long_error_is_cut_between_words_and_a_short_one_kept() -> None:
    words = " ".join(f"word{index}" for index in range(100))
    long = error_line(ConnectionError(words + "\nsecond line"))
    assert long.startswith("ConnectionError: word0 word1 ") and long.endswith(" …")
    quoted = long.removeprefix("ConnectionError: ").removesuffix(" …")
    assert len(quoted) <= ERROR_CHARS and words.startswith(quoted + " ")  # whole words only
    assert error_line(ValueError("API request failed\nmore")) == (
        "ValueError: API request failed")
    assert error_line(RuntimeError()) == "RuntimeError"
    url = "http://" + "x" * (2 * ERROR_CHARS)
    assert error_line(OSError(f"{url} refused the connection")) == f"OSError: {url} …"
