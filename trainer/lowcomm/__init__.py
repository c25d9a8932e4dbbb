"""``--exchange local``: low-communication training between islands of exactly data-parallel
ranks (APPROXIMATE; docs/lowcomm.md). ``plan`` (pure: islands, rounds, round length),
``outer`` (the collectives and the outer step), ``steps`` (an island's inner steps),
``saving`` (round-end checkpoints), ``rounds`` (the loop)."""
