"""``corral init``: a commented cluster.toml to start from.

Without hosts it is the local emulated demo (three ``local`` hosts of different emulated
speeds): the repository's own ``cluster.toml`` is this very text (a test keeps them equal;
``python -m remote.config.init`` prints it). With ssh_config aliases it is one ``[[hosts]]``
entry per alias, GPUs and ranks left to detection. With a script (``corral init --script
train.py``) the ``[run]`` section runs that script as is and sets no key that is only for
corral's own tasks, so the run warns of none. ``write_new`` never overwrites a file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from profiles.user_errors import UsageError
from remote.config.value_rules import NAME_RE
from trainer.settings.run_settings import MODELS, POLICIES

HEADER = """\
# corral cluster.toml: the one file that describes your machines and the training run.
#
"""
DEMO_INTRO = """\
# This default runs out of the box: three "local" hosts on this machine, each pretending to be
# a device of a different speed (slowdown), so `corral run` shows the load balancer moving
# work from the slow ranks to the fast one with no SSH set-up at all.
#
# For real machines, copy this file, replace the [[hosts]] entries with one per machine (see
# the commented example at the end of the hosts) and set master to the host that runs the
# rendezvous. Every key is described in docs/cluster-toml.md; a typo or a bad value is
# reported with the file, the section and the key, all problems at once.
"""
HOSTS_INTRO = """\
# One [[hosts]] entry per machine, reached over SSH with its ssh_config alias: user, port and
# key come from ~/.ssh/config. GPUs and ranks per host are detected (`corral check` shows what
# was found); `corral setup` makes a host without torch ready. Every key is described in
# docs/cluster-toml.md; a typo or a bad value is reported with the file, section and key.
"""
CLUSTER = """
[cluster]
name = "{name}"
{master}rendezvous_port = "auto"      # or a fixed TCP port, e.g. 29400
run_root = "~/.corral/runs"   # each run gets <run_root>/<run_id> on every host
# master_addr = "10.0.0.5"    # how the workers reach the master (default: its address)

# Ranks are numbered in host order (the first host's ranks first; rank 0 writes checkpoints).
"""
DEMO_MASTER = ('master = "fast"               # the host of torch\'s rendezvous store '
               "(default: the first host)\n")
ALIAS_MASTER = ('# master = "..."             # the host of torch\'s rendezvous store '
                "(default: the first host)\n")
DEMO_HOSTS = """\
# Each local host here runs one CPU rank with one thread.
[[hosts]]
name = "fast"
address = "local"             # this machine, no SSH
gpus = 0
nproc = 1
threads = 1
slowdown = 1.0                # real speed

[[hosts]]
name = "medium"
address = "local"
gpus = 0
nproc = 1
threads = 1
slowdown = 2.0                # emulates a device twice as slow

[[hosts]]
name = "slow"
address = "local"
gpus = 0
nproc = 1
threads = 1
slowdown = 3.0                # emulates a device three times as slow

# A real machine reached over SSH. Anything left out comes from ~/.ssh/config (an alias there
# works as the address), the ssh agent and the defaults in docs/cluster-toml.md.
#
# [[hosts]]
# name = "gpu1"
# address = "gpu1.example.org"   # ssh_config alias, hostname or IP
# user = "alice"
# port = 22
# identity_file = "~/.ssh/id_ed25519"
# python = "/opt/conda/bin/python"   # default: corral setup's venv, else python3
# workdir = "~/.corral"
# gpus = "auto"                  # every GPU torch sees there, or a count (0 = CPU only)
# nproc = 2                      # ranks on this host (default: the GPU count, 1 on CPU)
# interface = "eth0"             # network interface for Gloo/NCCL (default: detected)
# link_gbit = 1.0               # link speed for corral check's estimate (Wi-Fi shows none)
# allocator = "auto"             # tcmalloc/jemalloc when the host has one, else tuned glibc
# pin_cores = true               # disjoint cores per rank (GPU ranks: cores near their GPU)
# env = { NCCL_DEBUG = "WARN" }
# setup = ["sudo apt-get install -y python3-venv"]   # run first by `corral setup`
"""
ALIAS_HOST = """\
[[hosts]]
name = {name}
address = {address}       # ssh_config alias
# gpus = "auto"               # every GPU torch sees there, or a count (0 = CPU only)
# nproc = 1                   # ranks on this host (default: the GPU count, 1 on CPU)
# python = "python3"          # default: corral setup's venv, else python3
# setup = []                  # shell lines `corral setup` runs there first
"""
RUN_HEAD = f"""
[run]
model = "simple_cnn"          # {", ".join(MODELS)}
dataset = "synthetic_image"   # synthetic_image, or cifar10/cifar100 with data_dir
samples = 9600
global_batch = 96             # samples per step over all ranks together
policy = "dynamic"            # {", ".join(POLICIES[:-1])} or {POLICIES[-1]}
"""
DEMO_RUN = RUN_HEAD + """\
rebalance_every = 10
steps = 300
lr = 0.05
optimizer = "sgd"
seed = 0
checkpoint_every = 50
split = [32, 32, 32]          # start equal, so the demo shows the balancer moving work (without
                              # a split, dynamic starts from capacities measured in a warm-up)
"""
ALIAS_RUN = RUN_HEAD + """\
steps = 300
checkpoint_every = 50
# split = [48, 48]            # first shares, one per rank in host order (default: measured)
"""
SCRIPT_INTRO = """\
# Your own training script, run as is on every host as torchrun would run it here: the
# folder of this file travels to every host and is each rank's working directory. The
# script's arguments (model, data, batch, steps) are its own; docs/scripts.md says more.
"""
LOCAL_HOST = """\
# This machine, no SSH; add one [[hosts]] entry per machine (corral init --script FILE
# --hosts ALIAS,... writes them from your ssh_config aliases).
[[hosts]]
name = "local"
address = "local"
# gpus = "auto"               # every GPU torch sees here, or a count (0 = CPU only)
# nproc = 2                   # ranks here (default: the GPU count, 1 on CPU)
"""
LOCAL_ENTRY = """\
[[hosts]]
name = {name}
address = "local"             # this machine, no SSH
# gpus = "auto"               # every GPU torch sees here, or a count (0 = CPU only)
nproc = 1                     # ranks of this host
threads = {threads}{pad}# per rank: {cores} core(s) here shared by {ranks}
"""
"""One of several ``local`` hosts: the machine's cores are shared by every rank of them."""
SCRIPT_RUN = """
[run]
script = {script}{pad}# run as is (a path from this file's folder)
args = []                     # its arguments, as after the script on torchrun's command line
# code = ".."                 # the folder that travels, when the script reaches above this one
# max_restarts = 1            # relaunch after a failure, in the same working directories
"""
SSH = """
[ssh]
connect_timeout = 10.0
keepalive = 15.0
known_hosts = "strict"        # "insecure" skips host key checks (and warns)
"""
TRACKING = """
# Log every run to MLflow as well (pip install 'corral[mlflow]'; see docs/tracking.md):
# [tracking]
# mlflow = "sqlite:///mlflow.db"
"""


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=True)


def host_name_for(alias: str) -> str:
    """A valid host name for an ssh_config alias (other characters become ``-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", alias).strip("-._") or "host"
    return name if NAME_RE.match(name) else f"h-{name}"


def demo_toml() -> str:
    """The local emulated demo (the repository's cluster.toml)."""
    return (HEADER + DEMO_INTRO + CLUSTER.format(name="demo", master=DEMO_MASTER) + DEMO_HOSTS
            + DEMO_RUN + SSH + TRACKING)


def _alias_entries(aliases: Sequence[str]) -> str:
    """One ``[[hosts]]`` entry per ssh_config alias (a ``UsageError`` for a bad one)."""
    bad = [a for a in aliases if not a or a.startswith("-") or any(c.isspace() or
                                                                     not c.isprintable()
                                                                     for c in a)]
    if bad or not aliases:
        raise UsageError(f"--hosts takes ssh_config aliases separated by commas, like "
                         f"gpu1,laptop; not {', '.join(map(repr, bad)) or 'nothing'}",
                         title="bad --hosts")
    locals_ = aliases.count("local")
    names = [f"local{aliases[:i].count('local')}" if a == "local" and locals_ > 1
             else host_name_for(a) for i, a in enumerate(aliases)]
    if len(set(names)) != len(names):
        raise UsageError(f"--hosts {','.join(aliases)} names a host twice", title="bad --hosts")
    cores = len(os.sched_getaffinity(0))
    threads = str(max(1, cores // max(locals_, 1)))
    return "\n".join(
        LOCAL_ENTRY.format(name=_toml_string(n), threads=threads, pad=" " * (20 - len(threads)),
                           cores=cores, ranks=f"{locals_} local rank(s)")
        if a == "local" else ALIAS_HOST.format(name=_toml_string(n), address=_toml_string(a))
        for n, a in zip(names, aliases, strict=True))


def hosts_toml(aliases: Sequence[str]) -> str:
    """A cluster of the given ssh_config aliases, GPUs and ranks left to detection."""
    return (HEADER + HOSTS_INTRO + CLUSTER.format(name="cluster", master=ALIAS_MASTER)
            + _alias_entries(aliases) + ALIAS_RUN + SSH + TRACKING)


def script_toml(script: str, aliases: Sequence[str] | None) -> str:
    """A cluster running the script at ``script`` (a POSIX path from cluster.toml's folder) on
    this machine, or on the given ssh_config aliases."""
    value = _toml_string(script)
    run = SCRIPT_RUN.format(script=value, pad=" " * max(1, 21 - len(value)))
    if aliases is None:
        return (HEADER + SCRIPT_INTRO + CLUSTER.format(name="script", master="") + LOCAL_HOST
                + run + SSH)
    return (HEADER + SCRIPT_INTRO + "#\n" + HOSTS_INTRO + CLUSTER.format(name="cluster",
                                                                 master=ALIAS_MASTER)
            + _alias_entries(aliases) + run + SSH)


def write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; a file that exists is never overwritten."""
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise UsageError(f"{path} exists; corral init never overwrites a file (remove it, or "
                         "write another with -c NEW.toml)", title="not overwriting") from None
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}",
                         title="cannot write") from None


if __name__ == "__main__":  # pragma: no cover
    print(demo_toml(), end="")
