"""One training step: which samples each rank takes (``batch_order``, ``batches``), its share's
forward/backward (``accumulate``, timed by ``clock``, slowed by ``slowdown`` when emulating),
what every rank reports and the division that makes any split exact (``tally``), the optimizer
(``optim``) and the next batch made ahead (``prefetch``)."""
