"""bench/token_shares.py's count-balanced side: the causal_lm task without its items' token
counts, so that a balancing policy shares out item counts (as before token-balanced shares)."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainer.tasks import Task
from trainer.tasks.causal_lm import build as build_causal_lm


def build(options: dict[str, Any]) -> Task:
    return dataclasses.replace(build_causal_lm(options), item_tokens=None, padded=False)
