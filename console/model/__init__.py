"""The headless run model: the state of a run as its events arrive, and nothing else.

``run.RunModel`` reduces the run's event stream (``remote.api.RunEvent``) into plain records
(``records``) and per-row statuses (``rows``); its figures are the one reducer's
(``figures.RunFigures``, the same ``corral report`` reads); ``recorded`` replays a recorded
run into one. Both renderers read it: the Textual console (``console.app`` and its
widgets) and the plain-terminal follower (``console.follow``). Nothing here formats text or
imports a UI library (an import-linter contract says so): formatting lives with the renderers.
"""
