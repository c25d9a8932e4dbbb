"""How a rank enters the run's membership: launched with the run (generation 0) or joining it
later (``JOIN_ENV``: announced in rank 0's store, let in at a step boundary). Corral's own
loops (``join_run``) and the user's DDP helper (trainer/integrations/ddp_live.py) enter the
same way; without ``CORRAL_MEMBERSHIP_PORT`` there is no membership (today's fixed group)."""

from __future__ import annotations

import json
import os
import time

import torch

from profiles.user_errors import CorralError
from trainer.checkpoint.checkpointer import run_identity
from trainer.dist import RankInfo
from trainer.launch_contract import HOST_ENV
from trainer.membership.contract import (
    JOIN_ENV,
    JOINED_LINE,
    MEMBERSHIP_ADDR_ENV,
    MEMBERSHIP_PORT_ENV,
)
from trainer.membership.join_cost import joiner_phases
from trainer.membership.members import JoinRefused, Membership
from trainer.membership.plan import Generation, NextGeneration, config_for
from trainer.membership.store import JOIN_CONNECT_TIMEOUT, MembershipStore
from trainer.run_layout import RunLayout
from trainer.settings.train_config import TrainConfig
from trainer.step.optim import warm_up


def membership_port() -> int | None:
    """The run's membership port (None: the run has no live membership)."""
    port = os.environ.get(MEMBERSHIP_PORT_ENV)
    return int(port) if port else None


def joining() -> bool:
    """Whether this rank was launched to join a running run (``corral join``)."""
    return JOIN_ENV in os.environ


def this_host() -> str:
    """This rank's host as corral's launch named it (else the machine's name)."""
    return os.environ.get(HOST_ENV) or os.uname().nodename


class RunEnded(CorralError):
    """A joiner found no run to join: the run's store does not answer. No failure: the rank
    ends with status 0 (``exit_code``), so its host does not mark the completed run failed."""

    title = "nothing to join"
    exit_code = 0


def open_store(port: int, *, serve: bool) -> MembershipStore:
    """The run's store: served by launch rank 0, reached at the master's address. A joiner
    that cannot reach it within ``JOIN_CONNECT_TIMEOUT`` raises ``RunEnded`` (the run ended
    while it started: every rank ended, rank 0's store with them), rather than retrying for a
    launched rank's ``CONNECT_TIMEOUT``."""
    address = os.environ.get(MEMBERSHIP_ADDR_ENV) or os.environ.get("MASTER_ADDR", "127.0.0.1")
    if not joining():
        return MembershipStore(address, port, serve=serve)
    try:
        return MembershipStore(address, port, serve=False, connect=JOIN_CONNECT_TIMEOUT)
    except (RuntimeError, OSError) as exc:
        raise RunEnded(
            f"the run's membership store at {address}:{port} did not answer within "
            f"{JOIN_CONNECT_TIMEOUT.total_seconds():.0f} s: the run ended before this host "
            "could be let in (its rank 0 serves the store and exits with the run); start a "
            "new run (`corral run --resume` with this host) to train on it") from exc


def launched(store: MembershipStore, rank: int, world: int, leave_file: str,
             identity: dict[str, object]) -> Membership:
    """A launched rank's membership: generation 0 is the launch (every rank tells the others
    its host through the store)."""
    store.set(f"host/{rank}", this_host())
    members = tuple(range(world))
    hosts = tuple(store.get(f"host/{m}") for m in members)
    membership = Membership(store, Generation(0, members, hosts), rank, leave_file)
    membership.identity = identity
    return membership


def admitted(store: MembershipStore, leave_file: str, identity: dict[str, object],
             warm_up_s: float | None = None) -> Membership:
    """A joiner: announce this host and ``identity`` in the store (with its phases, and its
    warm-up's seconds among them), wait until rank 0 lets it in at a step boundary, and take
    its place in the generation that admits it (``Membership.joining``). ``JoinRefused``
    names why rank 0 refused it."""
    host = this_host()
    ticket = store.count("joiners/next", 1)
    store.set(f"joiner/{ticket}", json.dumps({"host": host, **identity,
                                              "phases": joiner_phases(warm_up_s)}))
    answer = json.loads(store.get(f"admit/{ticket}"))
    if "refused" in answer:
        raise JoinRefused(answer["refused"])
    plan = NextGeneration.from_json(store.get(answer["plan"]))
    store.joining = True  # watched and watching from its first forming (the run waits there)
    print(JOINED_LINE.format(member=answer["member"]), flush=True)  # for the host's tailer
    membership = Membership(store, plan.generation, answer["member"], leave_file)
    membership.joining = plan
    return membership


def join_run(config: TrainConfig, info: RankInfo
             ) -> tuple[Membership | None, RankInfo, TrainConfig]:
    """With ``CORRAL_MEMBERSHIP_PORT``: reach the run's store (launch rank 0 serves it). A
    launched rank tells every rank its host (generation 0 is the launch); a joiner
    (``JOIN_ENV``) warms up (``warm_up``), announces itself and waits to be let in at a step
    boundary, then takes its place (rank, world, split) in the generation that admits it;
    refused, ``JoinRefused`` names why. Without the port: ``(None, info, config)``, today's path."""
    port = membership_port()
    if port is None:
        return None, info, config
    store = open_store(port, serve=info.rank == 0 and not joining())
    leave_file = RunLayout(config.run_dir).leave_request(this_host())
    identity = {"torch": torch.__version__, "run": json.loads(json.dumps(run_identity(config)))}
    if not joining():
        return launched(store, info.rank, info.world_size, leave_file, identity), info, config
    warming = time.monotonic()
    warm_up(config)
    membership = admitted(store, leave_file, identity, time.monotonic() - warming)
    plan = membership.joining
    assert plan is not None
    info = RankInfo(rank=membership.rank, world_size=len(plan.generation.members),
                    local_rank=info.local_rank)
    return membership, info, config_for(config, [None] * info.world_size, plan.split)
