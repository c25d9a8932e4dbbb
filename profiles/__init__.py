"""Hardware detection and benchmarks for corral hosts.

Pushed to every host with the trainer: never imports ``console``, ``remote`` or ``textual``.
"""

from profiles.errors import CorralError, UsageError

__all__ = ["CorralError", "UsageError"]
