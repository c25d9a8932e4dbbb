"""Argument types of the trainer's flags: each turns one flag's text into a value or raises
``argparse.ArgumentTypeError`` showing what was expected."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config import SlowdownChange


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 24,8; got {text!r}"
        ) from None


def cap_list(text: str) -> tuple[int | None, ...]:
    try:
        return tuple(None if p.strip() in ("", "-", "none") else int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers or '-' (no cap) like 64,-; got {text!r}"
        ) from None


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 1,3; got {text!r}"
        ) from None


def slowdown_change(text: str) -> SlowdownChange:
    from trainer.config import SlowdownChange  # config imports this module

    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        return SlowdownChange(step=int(parts[0]), rank=int(parts[1]), factor=float(parts[2]))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected STEP:RANK:FACTOR like 50:1:2; got {text!r}"
        ) from None


def task_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like lora_r=16; got {text!r}")
    return key.strip(), value
