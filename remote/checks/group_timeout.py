"""A script's own process-group timeout longer than ``[run] hang_limit``, said before the run
starts.

A script's ranks make their group with the script's timeout (``trainer.integrations.
rank_setup``); corral's hang watch stops a rank that makes no step for ``hang_limit`` seconds
first. Where the script writes its timeout as literal values
(``init_process_group(timeout=timedelta(hours=1))``, accelerate's ``InitProcessGroupKwargs``),
``remote.config.script_source.group_timeouts`` reads it on this machine, and the check says it
(a warning: ``corral check``, and ``corral run`` before anything starts), naming the setting to
raise. A timeout computed at run time is said by the rank when it makes its group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remote.config.script_source import group_timeouts
from remote.events import CheckItem

if TYPE_CHECKING:
    from remote.config.cluster import ClusterConfig
    from remote.config.task_code import UserCode

GROUP_TIMEOUT_CHECK = "group-timeout"
"""The check item naming a script's group timeout longer than ``[run] hang_limit``."""


def group_timeout_items(config: ClusterConfig, code: UserCode | None) -> list[CheckItem]:
    """One warning per literal timeout of the script longer than ``[run] hang_limit`` (none
    for a task run, a ``hang_limit`` of 0, or a script whose timeouts are not literal)."""
    limit = config.run.hang_limit
    if code is None or code.function is not None or not limit:
        return []
    items = []
    for found in group_timeouts(code.source):
        if found.seconds <= limit:
            continue
        items.append(CheckItem(
            host="*", name=GROUP_TIMEOUT_CHECK, ok=True,
            detail=(f"warning: {code.task_file}:{found.line}: the script's process-group "
                    f"timeout ({found.call}, {found.seconds:g} s) is longer than [run] "
                    f"hang_limit ({limit:g} s): a rank that makes no step for {limit:g} s "
                    "while another waits for it stops the run first; raise [run] hang_limit "
                    f"to at least {found.seconds:g} to wait as the script asks"),
            hint="[run] hang_limit in cluster.toml (docs/scripts.md: group timeouts)"))
    return items
