"""corral's trainer: runs on every host under torch's launcher (``python -m trainer``).

Pushed to the hosts with ``profiles``: never imports ``console``, ``remote`` or ``textual``.
"""
