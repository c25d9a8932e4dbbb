"""How a user's script resumes, when corral recognises it: the arguments its author gives to
resume from the script's own checkpoint rather than start over (issue 80, item 5).

Read from the script's text on this machine, never run. Each idiom is one a public training
script uses:

- ``--init_from=resume``: nanoGPT's and llama2.c's ``train.py`` (a global ``init_from =
  "scratch"`` that their ``configurator.py`` overrides from ``--init_from=...``);
- Hugging Face's ``Trainer`` scripts that look for their newest ``checkpoint-N`` themselves
  (``get_last_checkpoint``, the transformers examples): they resume unless
  ``--overwrite_output_dir`` is given, so the idiom drops it;
- a ``--resume_from_checkpoint`` argument the script passes to ``Trainer.train`` (TRL's and
  many HF scripts): given the newest checkpoint folder the run recorded, when it is known;
- a plain ``--resume`` switch (``argparse`` ``store_true``) that many loops read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INIT_FROM = re.compile(r"^init_from\s*=\s*['\"]scratch['\"]", re.MULTILINE)
RESUME_SWITCH = re.compile(
    r"add_argument\(\s*['\"]--resume['\"][^)]*action\s*=\s*['\"]store_true['\"]")
OVERWRITE = "--overwrite_output_dir"
FALSE_WORDS = frozenset({"false", "False", "0", "no"})


@dataclass(frozen=True)
class ResumeIdiom:
    """A script's way to resume: ``args`` are the run's arguments with it applied (what the
    console offers), ``name`` the idiom in the script's own words, ``note`` what it does."""

    name: str
    args: tuple[str, ...]
    note: str


def _without(args: Sequence[str], flag: str, *, takes_value: bool) -> list[str]:
    """``args`` without ``flag`` (``--flag=V``, ``--flag V`` when it ``takes_value``)."""
    kept: list[str] = []
    skip = False
    for i, word in enumerate(args):
        if skip:
            skip = False
        elif word.startswith(flag + "="):
            continue
        elif word == flag:
            following = args[i + 1] if i + 1 < len(args) else ""
            skip = takes_value or (following in FALSE_WORDS | {"true", "True", "1", "yes"})
        else:
            kept.append(word)
    return kept


def resume_idiom(source: str, args: Sequence[str], *,
                 newest_checkpoint: str | None = None) -> ResumeIdiom | None:
    """The idiom the script whose text is ``source`` resumes with, applied to ``args`` (its
    arguments, one string each); None when none is recognised (or, for an argument that
    needs the checkpoint's folder, when ``newest_checkpoint`` is not known)."""
    if INIT_FROM.search(source) and re.search(r"['\"]resume['\"]", source):
        return ResumeIdiom("--init_from=resume",
                           (*_without(args, "--init_from", takes_value=True),
                            "--init_from=resume"),
                           "loads out_dir's ckpt.pt (nanoGPT, llama2.c) instead of starting "
                           "from scratch")
    if "resume_from_checkpoint" in source and "get_last_checkpoint" in source:
        return ResumeIdiom("resume_from_checkpoint (its newest checkpoint-N)",
                           tuple(_without(args, OVERWRITE, takes_value=False)),
                           "the script finds its newest checkpoint-N in its output_dir "
                           f"itself; {OVERWRITE} would start over")
    if re.search(r"resume_from_checkpoint\s*=\s*\w+\.resume_from_checkpoint", source):
        if newest_checkpoint is None:
            return None
        return ResumeIdiom("--resume_from_checkpoint",
                           (*_without(args, "--resume_from_checkpoint", takes_value=True),
                            f"--resume_from_checkpoint={newest_checkpoint}"),
                           "Trainer.train resumes from the newest checkpoint the run saved")
    if RESUME_SWITCH.search(source):
        return ResumeIdiom("--resume", (*_without(args, "--resume", takes_value=False),
                                        "--resume"),
                           "the script's own switch to load its checkpoint")
    return None


def script_resume_idiom(script: str | Path, args: Sequence[str], *,
                        newest_checkpoint: str | None = None) -> ResumeIdiom | None:
    """``resume_idiom`` of the script file at ``script`` (None when it cannot be read)."""
    try:
        source = Path(script).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return resume_idiom(source, args, newest_checkpoint=newest_checkpoint)
