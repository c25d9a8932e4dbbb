"""A script run's working directory gets the launch folder's data: a link per file, or a copy.

The data sync (``remote.hosts.data_sync``) writes, per host, a list of the working directory's
data paths and where each is (a cached, read-only file, or the file in place on a host that sees
this machine's files). ``seed_words`` is the shell that puts them there before the ranks start:

- a file an earlier run wrote (``OUTPUT_PATTERNS``: a checkpoint, weights, a log) is *copied*,
  not linked, so that the script may write it again (``torch.save`` through a link to a
  read-only cached file would fail; through a link to the launch folder it would change the
  user's own file);
- a regular file already in the working directory that corral did not put there unwritten
  (rank 0's checkpoint of the attempt before, a file ``remote.run.replicate`` copied) is never
  replaced: a ``--resume`` loads what the run wrote, not the launch folder's older copy;
- what corral copied is recorded (``hosts/<host>.seeded``: per path, size and modification time
  of the copy); a copy unwritten since counts as corral's, which ``remote.run.replicate`` replaces
  with rank 0's newer file before a relaunch, so no host loads a stale checkpoint on resume;
- on a relaunch (``--resume``, ``r``, a ``max_restarts`` restart), the newest checkpoint file
  the attempt before left (``*.pt``, ``*.pth``, ``*.ckpt``, ``*.safetensors``) is kept whole
  under ``<run>/kept/<host>/attempt-<time>/`` and a copy put in its place: a script relaunched
  with its first arguments (nanoGPT without ``--init_from=resume``) overwrites the copy only.
"""

from __future__ import annotations

import json
import shlex

from remote.hosts.push_ignore import OUTPUT_PATTERNS
from remote.hosts.transport import shell_path

SEED_PY = """
import fnmatch, json, os, shutil, sys, time
links, cwd, where, patterns = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
keep = sys.argv[5] if len(sys.argv) > 5 else ""
try:
    with open(where) as f:
        record = json.load(f)
except (OSError, ValueError):
    record = {}
def copied(rel):
    parts = rel.split("/")
    for p in patterns:
        if p.endswith("/") and any(fnmatch.fnmatchcase(x, p[:-1]) for x in parts[:-1]):
            return True
        if not p.endswith("/") and fnmatch.fnmatchcase(parts[-1], p):
            return True
    return False
lines = []
if os.path.isfile(links):  # none: no data to link, a checkpoint still kept
    with open(links, encoding="utf-8") as f:
        lines = [line.rstrip("\\n").split("\\t", 1) for line in f if "\\t" in line]
for target, rel in lines:
    path = os.path.join(cwd, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isfile(path) and not os.path.islink(path):
        info = os.stat(path)
        if record.get(rel) != [info.st_size, info.st_mtime_ns]:
            continue  # written by the run (or replicated from rank 0's host): never replaced
    part = path + ".corral-part"
    if os.path.lexists(part):
        os.unlink(part)
    if copied(rel):
        if not os.path.isfile(target):
            continue  # gone since it was listed: as under torchrun, the script finds none
        shutil.copyfile(target, part)
        os.chmod(part, 0o600)
        os.replace(part, path)
        info = os.stat(path)
        record[rel] = [info.st_size, info.st_mtime_ns]
    else:
        os.symlink(target, part)
        os.replace(part, path)
        record.pop(rel, None)
KEEP = ("*.pt", "*.pth", "*.ckpt", "*.safetensors")
if keep:  # a relaunch: the attempt before's newest checkpoint kept beside the one to come
    mine = [os.path.join(d, n) for d, _, names in os.walk(cwd) for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in KEEP)]
    mine = [p for p in mine if os.path.isfile(p) and not os.path.islink(p)]
    if mine:
        newest = max(mine, key=os.path.getmtime)
        rel = os.path.relpath(newest, cwd)
        dest = os.path.join(keep, time.strftime("attempt-%Y%m%d-%H%M%S"), rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(newest, dest)  # the original kept whole; the script gets a copy to write
        shutil.copy2(dest, newest)
        print(f"kept the attempt before's newest checkpoint {rel} as {dest}", flush=True)
with open(where + ".corral-part", "w") as out:
    json.dump(record, out)
os.replace(where + ".corral-part", where)
"""
"""Run on a host with ``python -S``: argv links file, working directory, record, patterns,
and on a relaunch the folder where the attempt before's newest checkpoint is kept."""


SEED_VAR = "SEED_CWD"
"""The shell variable ``corral run --dry-run`` names the program by (``seed_by_name``)."""


def seed_by_name(command: str) -> str:
    """``command`` with the program inline shown as ``"$SEED_CWD"`` (``--dry-run`` prints
    the program once, as that variable's assignment, before the hosts' commands)."""
    return command.replace(shlex.quote(SEED_PY), f'"${SEED_VAR}"')


def seed_words(python: str, links: str, cwd: str, record: str, keep: str = "") -> str:
    """Shell: ``python`` (a quoted word) seeding ``cwd`` from the link list ``links``,
    recording its copies in ``record`` (paths in shell syntax: ``~`` expands); ``keep``: a
    relaunch's folder for the attempt before's newest checkpoint (moved there whole, a copy
    left in its place for the script to load or write)."""
    words = [python, "-S", "-c", shlex.quote(SEED_PY), shell_path(links), shell_path(cwd),
             shell_path(record), shlex.quote(json.dumps(list(OUTPUT_PATTERNS)))]
    return " ".join(words + ([shell_path(keep)] if keep else []))
