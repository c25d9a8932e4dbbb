"""``corral check`` of a host whose container engine cannot be used (issue 59, item 4): docker's
daemon down is named as the daemon (it read "image ... is not on h1"), and a hung engine ends
the check within 15 s with one row (it took 120 s and blamed ``python`` with raw shell)."""

from __future__ import annotations


