"""``--exchange local``: low-communication training between islands of exactly data-parallel
ranks (APPROXIMATE; docs/lowcomm.md). ``plan`` (pure: islands, rounds, round length),
``outer`` (the outer step), ``exchange`` (a round's exchange, sync or overlapped),
``compress`` (int8/int4 payloads, error feedback), ``steps`` (an island's inner steps),
``saving`` (round-end checkpoints), ``rounds`` (the loop)."""
