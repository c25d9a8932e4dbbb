"""The tailer corral runs on each host (``python -c``, standard library only).

Usage: ``python -c <this file> RUN_DIR PATHS_JSON OFFSETS_JSON``

``PATHS_JSON`` names the host's files inside RUN_DIR (``remote.run.stream.tailer_paths``, from
``trainer.run_layout.RunLayout``): ``launcher_log``, ``events`` (with ``{rank}``), and the
bookkeeping files ``ranks``, ``planned``, ``exit``, ``pgid``, ``leader`` and ``stopped``.

Follows the host's launcher log and the event files of the ranks that belong to the host, from
the given byte offsets, and prints one record per line on stdout:

- ``L<TAB>path<TAB>end offset<TAB>text``: a complete line of ``path`` (relative to RUN_DIR)
  that ends at byte ``end offset``;
- ``O<TAB>rank``: the rank belongs to this host;
- ``X<TAB>status``: the launcher ended (its exit status, ``stopped`` when ``corral stop``
  ended it, ``gone`` when its process group vanished without one, ``diskfull`` when it failed
  or vanished with the run directory's disk full: the exit file and the ranks' last words may
  not have fitted there); every line written
  before it has been printed; the tailer exits;
- ``F``: the end of a batch of lines (the follower saves its offsets there);
- ``H``: a heartbeat every few seconds.

The host's ranks are known once torchrun logs its rendezvous result (``global_ranks=[...]``,
at INFO level) into the host's launcher log: they are the ranks the launch planned for the host
(the ``planned`` file, numbered in host order) or, for a launch without that file, the ranks
torchrun logged; a host that joined the run live (``planned`` holds ``join``) owns the
ranks its launcher log says were admitted (``JOINED``), and its ranks' lines are printed with
their member ids from then on (``JOINER_PREFIX``). They are kept in the ``ranks`` file for
later tailers. Hosts may share one
machine and one run directory, so event files of other ranks are left alone. The tailer exits
when its stdin closes (the follower went away).
"""

import contextlib
import json
import os
import re
import select
import sys
import time

POLL_S = 0.2
FULL_BELOW_BYTES = 1 << 20
"""Free space under which a launcher that failed or vanished is said to have met a full disk."""
HEARTBEAT_S = 2.0
GLOBAL_RANKS = re.compile(r"\bglobal_ranks=\[([\d, ]*)\]")
JOINED = re.compile(r"\bcorral: joined the run as member (\d+)\b")
"""A joiner's rank, once admitted (``trainer.membership.contract.JOINED_LINE``)."""
JOINER_PREFIX = re.compile(r"\[rank(\d+)\+0\]:")
"""A joiner's rank line prefix (a world of its own: local rank + 0), relabelled with the
member id once that rank is admitted: ``[rank<member>+0]:``, so every seat, ``corral logs`` and
the report name it as the run's events do (not as rank 0)."""
JOIN_MARK = "join"
"""The ``planned`` file of a host launched by ``corral join``: its ranks are not known at
launch (rank 0 gives each joiner the next member id), so they are the ones its launcher log
names with ``JOINED``, never torchrun's own ranks (a world of its own, from 0)."""


class Tailer:
    """One host's files, followed from ``offsets``; records go to ``out``."""

    def __init__(self, paths, offsets, out):
        self.paths = paths
        self.offsets = offsets
        self.out = out
        self.owned = set()
        self.members = {}  # a joiner's local rank -> the member id rank 0 gave it
        self.last_beat = 0.0

    def run(self):
        """Print records until the launcher ends or stdin closes."""
        self.owned = set(self.read_ranks("ranks"))
        self.recall_members()
        for rank in sorted(self.owned):
            self.out.write(f"O\t{rank}\n")
        self.out.flush()
        while True:
            # The launcher's state is read before the drain: every line written before it
            # ended is printed before its X record.
            state = self.launcher_state()
            self.drain_all()
            now = time.time()
            if now - self.last_beat >= HEARTBEAT_S:
                self.out.write("H\n")
                self.last_beat = now
            if state is not None:
                self.out.write(f"X\t{state}\n")
                self.out.flush()
                return
            self.out.flush()
            readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
            if readable and not os.read(sys.stdin.fileno(), 4096):
                return

    def drain_all(self):
        before = dict(self.offsets)
        self.drain(self.paths["launcher_log"])
        for rank in sorted(self.owned):
            self.drain(self.paths["events"].format(rank=rank))
        if self.offsets != before:
            self.out.write("F\n")

    def admitted(self, text, member):
        """A joiner's rank was let in as ``member``: its lines are labelled with that id."""
        prefix = JOINER_PREFIX.search(text)
        self.members[int(prefix.group(1)) if prefix else 0] = member

    def relabel(self, text):
        """A joiner's line with its admitted ranks' member ids in their prefixes."""
        def member(found):
            local = int(found.group(1))
            return f"[rank{self.members[local]}+0]:" if local in self.members else found.group(0)
        return JOINER_PREFIX.sub(member, text)

    def recall_members(self):
        """A joiner's admitted ranks, from the launcher log this tailer starts past."""
        start = self.offsets.get(self.paths["launcher_log"], 0)
        if not start or not self.joiner():
            return
        try:
            with open(self.paths["launcher_log"], "rb") as f:
                seen = f.read(start).decode("utf-8", "replace")
        except OSError:
            return
        for line in seen.splitlines():
            joined = JOINED.search(line)
            if joined:
                self.admitted(line, int(joined.group(1)))

    def joiner(self):
        try:
            with open(self.paths["planned"]) as f:
                return f.read().strip() == JOIN_MARK
        except OSError:
            return False

    def read_ranks(self, name):
        try:
            with open(self.paths[name]) as f:
                return [int(x) for x in f.read().split() if x.isdigit()]
        except OSError:
            return []

    def own(self, ranks):
        self.owned.clear()
        self.owned.update(ranks)
        ranks_file = self.paths["ranks"]
        with open(ranks_file + ".tmp", "w") as f:
            f.write("".join(f"{r}\n" for r in sorted(ranks)))
        os.replace(ranks_file + ".tmp", ranks_file)
        for rank in sorted(ranks):
            self.out.write(f"O\t{rank}\n")

    def drain(self, path):
        start = self.offsets.get(path, 0)
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        if size <= start:
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size - start)
        end = data.rfind(b"\n")
        if end < 0:
            return
        pos = start
        for raw in data[: end + 1].splitlines(True):
            pos += len(raw)
            text = raw.rstrip(b"\n").decode("utf-8", "replace")
            joined = (JOINED.search(text) if path == self.paths["launcher_log"]
                      and "joined the run as member" in text and self.joiner() else None)
            if joined:
                self.admitted(text, int(joined.group(1)))
            if self.members and path == self.paths["launcher_log"]:
                text = self.relabel(text)
            self.out.write(f"L\t{path}\t{pos}\t{text}\n")
            if joined:
                self.own({*self.owned, int(joined.group(1))})
            elif (path == self.paths["launcher_log"] and "global_ranks=[" in text
                    and not self.joiner()):
                match = GLOBAL_RANKS.search(text)
                if match:
                    logged = [int(x) for x in match.group(1).replace(",", " ").split()]
                    self.own(self.read_ranks("planned") or logged)
        self.offsets[path] = pos

    def launcher_state(self):
        # An exit file means the launcher ended by itself (a stop kills its shell first).
        state = self.launcher_exit()
        if state == "gone" and os.path.exists(self.paths["stopped"]):
            return "stopped"
        if state is not None and state != "0" and disk_is_full():
            return "diskfull"
        return state

    def launcher_exit(self):
        try:
            with open(self.paths["exit"]) as f:
                return f.read().strip() or "gone"
        except OSError:
            pass
        try:
            with open(self.paths["pgid"]) as f:
                pgid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if not self.leader_is_ours(pgid):
            return "gone"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return None
        return None

    def leader_is_ours(self, pgid):
        # The process that now has the recorded id must have the launcher's start time (a
        # stranger may have the id by now). No such process: only our group's remaining
        # members can hold the id, which killpg then finds.
        try:
            with open(self.paths["leader"]) as f:
                recorded = f.read().strip()
            with open(f"/proc/{pgid}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            return True
        return not recorded or fields[19] == recorded


def disk_is_full():
    """True when the run directory's file system has (almost) no space left for its user."""
    try:
        found = os.statvfs(".")
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < FULL_BELOW_BYTES


def main():
    run_dir, paths, offsets = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    os.chdir(run_dir)
    Tailer(paths, offsets, sys.stdout).run()


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        main()
