"""The shell command that follows one host's launcher log of a run: ``ssh HOST tail -F FILE``.

The console shows it (and copies it) beside a log search, and ``corral logs --follow-command``
prints it, so an operator can watch a host's every line in their own terminal. The file is the
host's launcher log (``trainer.run_layout.RunLayout.launcher_log``), which holds what torchrun
and every rank of the host printed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from profiles.user_errors import UsageError
from remote.config.cluster import ClusterConfig, SshSection
from remote.hosts.transport import shell_path
from remote.records.runs import run_dir_for
from trainer.run_layout import RunLayout


def follow_log_command(config: ClusterConfig, run_id: str, host: str) -> str:
    """``ssh [-p PORT] [-i KEY] [USER@]ADDRESS 'tail -F FILE'`` for ``host`` (on a ``local``
    host: ``tail -F FILE``). Every value is quoted; ``~`` is left for the host to expand."""
    section = next((h for h in config.hosts if h.name == host), None)
    if section is None:
        names = ", ".join(h.name for h in config.hosts)
        raise UsageError(f"no host {host!r} in {config.path} (its hosts: {names})",
                         title="unknown host")
    tail = f"tail -F {shell_path(RunLayout(run_dir_for(config, run_id)).launcher_log(host))}"
    if section.is_local:
        return tail
    words = ["ssh"]
    if config.ssh.config_file != SshSection.config_file:  # not ssh's own default: name it
        words += ["-F", str(Path(config.ssh.config_file).expanduser())]
    if section.port is not None:
        words += ["-p", str(section.port)]
    if section.identity_file is not None:
        words += ["-i", section.identity_file]
    target = section.address if section.user is None else f"{section.user}@{section.address}"
    return f"{shlex.join([*words, target])} {shlex.quote(tail)}"
