"""The split of the global batch over the ranks: the first one (``capacity``), and the balancer
that changes it (``balancer`` decides, ``fit`` models each rank's time, ``solve`` finds the
best split for a model, ``passes`` adds micro-batch passes; its settings in ``config``)."""
