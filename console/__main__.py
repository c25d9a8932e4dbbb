"""``python -m console``: the same as the ``corral`` command."""

from __future__ import annotations

import sys

from console.cli import main

sys.exit(main())
