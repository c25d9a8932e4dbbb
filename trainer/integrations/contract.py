"""What corral's launch tells a user's script, through the environment: the one definition.

The launcher (``remote``) sets these variables on every rank it starts in script mode
(``ScriptSettings.to_env``); the script's opt-in (``trainer.integrations.hf``, ``.ddp``) reads
them (``ScriptSettings.from_env``). Without ``CORRAL_RUN_DIR`` the script is not run by corral
and the opt-in does nothing at all. The emulated slowdown is corral's usual
``CORRAL_SLOWDOWN`` (``trainer.settings.train_config.SLOWDOWN_ENV``: one factor for every rank
of the host, or one per global rank).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from profiles.user_errors import UsageError
from trainer.settings.run_settings import POLICIES, Policy
from trainer.settings.train_config import SLOWDOWN_ENV

RUN_DIR_ENV = "CORRAL_RUN_DIR"
"""The run directory on this host (events go to ``metrics/rank-<r>.jsonl`` under it). Its
presence is what tells a script it runs under corral."""
RESTART_ENV = "CORRAL_RESTART"
"""How many times corral has restarted the run (``0`` at the first launch): a script resumes
from its last checkpoint when it is above 0."""
POLICY_ENV = "CORRAL_POLICY"
"""Balancing policy: ``static``, ``proportional`` or ``dynamic`` (the launch passes ``[run]
policy``, ``dynamic`` unless set; a script run by hand without it: ``static``)."""
SPLIT_ENV = "CORRAL_SPLIT"
"""Comma-separated per-rank shares of the global batch (``5,2,1``); empty: equal shares."""
REBALANCE_EVERY_ENV = "CORRAL_REBALANCE_EVERY"
"""Steps between two decisions of the ``dynamic`` policy (``proportional``: the steps measured
at equal shares before the one change)."""

BACKEND_ENV = "CORRAL_BACKEND"
"""The process-group backend corral chose for the whole cluster (``gloo`` or ``nccl``):
``script_main`` makes the group with it before the script runs, so every rank agrees."""
DEVICE_ENV = "CORRAL_DEVICE"
"""Where this host's ranks compute: ``cpu`` or ``cuda`` (cluster.toml's ``gpus``)."""
HANG_LIMIT_ENV = "CORRAL_HANG_LIMIT"
"""Seconds a rank may take from its start to its first optimizer step before ``script_main``
names it stuck, with its stack (``[run] hang_limit``; 0: never)."""

DEFAULT_REBALANCE_EVERY = 10


@dataclass(frozen=True, kw_only=True)
class ScriptSettings:
    """corral's settings for a user's script, as its environment carries them."""

    run_dir: str
    restart: int = 0
    policy: Policy = "static"
    split: tuple[int, ...] | None = None
    rebalance_every: int = DEFAULT_REBALANCE_EVERY
    slowdown: tuple[float, ...] | None = None
    backend: str = ""
    """The cluster's process-group backend (empty: the rank's own choice)."""
    device: str = ""
    """``cpu`` or ``cuda`` (empty: what torch finds)."""
    hang_limit: float = 0.0
    """Seconds from a rank's start to its first step before it is named stuck (0: never)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScriptSettings | None:
        """The settings in ``env`` (default ``os.environ``); None when not run by corral."""
        env = os.environ if env is None else env
        run_dir = env.get(RUN_DIR_ENV, "")
        if not run_dir:
            return None
        policy = env.get(POLICY_ENV, "static") or "static"
        if policy not in POLICIES:
            raise UsageError(f"{POLICY_ENV}={policy!r}: choose one of {', '.join(POLICIES)}")
        split = _numbers(env, SPLIT_ENV)
        return cls(run_dir=run_dir, restart=_int(env, RESTART_ENV, 0), policy=policy,
                   split=None if split is None else tuple(int(v) for v in split),
                   rebalance_every=_int(env, REBALANCE_EVERY_ENV, DEFAULT_REBALANCE_EVERY),
                   slowdown=_numbers(env, SLOWDOWN_ENV), backend=env.get(BACKEND_ENV, ""),
                   device=env.get(DEVICE_ENV, ""),
                   hang_limit=(_numbers(env, HANG_LIMIT_ENV) or (0.0,))[0])

    def to_env(self) -> dict[str, str]:
        """The variables for the launcher to set (the inverse of ``from_env``)."""
        env = {RUN_DIR_ENV: self.run_dir, RESTART_ENV: str(self.restart),
               POLICY_ENV: self.policy, REBALANCE_EVERY_ENV: str(self.rebalance_every)}
        if self.split is not None:
            env[SPLIT_ENV] = ",".join(map(str, self.split))
        if self.slowdown is not None:
            env[SLOWDOWN_ENV] = ",".join(map(str, self.slowdown))
        for name, value in ((BACKEND_ENV, self.backend), (DEVICE_ENV, self.device)):
            if value:
                env[name] = value
        env[HANG_LIMIT_ENV] = str(self.hang_limit)
        return env

    def slowdown_of(self, rank: int) -> float:
        """Rank ``rank``'s emulated slowdown factor (1.0: none)."""
        if not self.slowdown:
            return 1.0
        if len(self.slowdown) == 1:
            return self.slowdown[0]
        return self.slowdown[rank] if rank < len(self.slowdown) else 1.0


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise UsageError(f"{name}={text!r} is not a whole number (set by corral's launch)")
    return int(text)


def _numbers(env: Mapping[str, str], name: str) -> tuple[float, ...] | None:
    text = env.get(name, "")
    if not text:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{name}={text!r}: expected comma-separated numbers such as "
                         f"'5,2,1' (set by corral's launch)") from None
