"""A browser tab's console for ``test_serve_browser.py``: the real ``ConsoleApp`` on the fake
controller, attached to a run held live at step 5, read-only unless its role is ``control``.

textual-serve starts this as it would start ``corral console --served ROLE``:
``python served_fake_console.py ROLE``. On exit it writes the controller's calls to the file
named by ``CORRAL_TEST_CALLS`` (so the test can see that a read-only tab never stopped the run).
"""

from __future__ import annotations

import json
import os
import sys

from tests.console.console_helpers import make_app
from tests.fake_runs import FakeController

if __name__ == "__main__":
    role = sys.argv[1]
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller, attach_run="fake-1", read_only=role != "control")
    app.run()
    stops = sum(run.stop_calls for run in controller.runs)
    with open(os.environ["CORRAL_TEST_CALLS"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"role": role, "calls": [c[0] for c in controller.calls],
                              "stopped": stops}) + "\n")
