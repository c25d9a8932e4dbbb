"""``python -m trainer`` as a script file, for launchers that run only ``.py`` files (torch's
``torch.backends.xeon.run_cpu``): ``python bench/trainer_script.py <trainer flags>``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.__main__ import _exit, main

if __name__ == "__main__":
    _exit(main())
