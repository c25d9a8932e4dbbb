"""The console's screens and panels, one module per widget.

The run screen (``layout.run_panels``): ``header``, ``hosts``, ``throughput``, ``loss``,
``balancer``, ``logs``, each drawing from the run model (``console.model.run.RunModel``) when the
app's refresh timer calls its ``sync``. Other screens: ``modals`` (dialogs, help), ``runs``
(the past runs), ``past_run`` (one of them, read-only), ``report``. ``lines_view.LinesView`` is
the scrollable list most panels are built on; number formatting is in ``console.formatting``.
"""
