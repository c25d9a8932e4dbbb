"""The tailer corral runs on each host (``python -c``, standard library only).

Usage: ``python -c <this file> RUN_DIR HOST OFFSETS_JSON``

Follows the host's launcher log and the event files of the ranks that belong to the host, from
the given byte offsets, and prints one record per line on stdout:

- ``L<TAB>path<TAB>end offset<TAB>text``: a complete line of ``path`` (relative to RUN_DIR)
  that ends at byte ``end offset``;
- ``O<TAB>rank``: the rank belongs to this host;
- ``X<TAB>status``: the launcher ended (its exit status, ``stopped`` when ``corral stop``
  ended it, or ``gone`` when its process group vanished without one); every line written
  before it has been printed; the tailer exits;
- ``F``: the end of a batch of lines (the follower saves its offsets there);
- ``H``: a heartbeat every few seconds.

The host's ranks are known once torchrun logs its rendezvous result (``global_ranks=[...]``,
at INFO level) into the host's launcher log: they are the ranks the launch planned for the host
(``hosts/HOST.planned``, numbered in host order) or, for a launch without that file, the ranks
torchrun logged. They are kept in ``hosts/HOST.ranks`` for later tailers. Hosts may share one
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
HEARTBEAT_S = 2.0
GLOBAL_RANKS = re.compile(r"\bglobal_ranks=\[([\d, ]*)\]")


def main():
    run_dir, host, offsets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    os.chdir(run_dir)
    launcher_log = f"logs/{host}/launcher.log"
    ranks_file = f"hosts/{host}.ranks"
    owned = set()
    if os.path.exists(ranks_file):
        with open(ranks_file) as f:
            owned = {int(x) for x in f.read().split() if x.isdigit()}
    out = sys.stdout
    for rank in sorted(owned):
        out.write(f"O\t{rank}\n")
    out.flush()
    last_beat = 0.0

    def own(ranks):
        owned.clear()
        owned.update(ranks)
        with open(ranks_file + ".tmp", "w") as f:
            f.write("".join(f"{r}\n" for r in sorted(ranks)))
        os.replace(ranks_file + ".tmp", ranks_file)
        for rank in sorted(ranks):
            out.write(f"O\t{rank}\n")

    def planned():
        try:
            with open(f"hosts/{host}.planned") as f:
                return [int(x) for x in f.read().split() if x.isdigit()]
        except OSError:
            return []

    def drain(path):
        start = offsets.get(path, 0)
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
            out.write(f"L\t{path}\t{pos}\t{text}\n")
            if path == launcher_log and "global_ranks=[" in text:
                match = GLOBAL_RANKS.search(text)
                if match:
                    own(planned() or [int(x) for x in match.group(1).replace(",", " ").split()])
        offsets[path] = pos

    def launcher_state():
        # An exit file means the launcher ended by itself (a stop kills its shell first).
        state = launcher_exit()
        if state == "gone" and os.path.exists(f"hosts/{host}.stopped"):
            return "stopped"
        return state

    def launcher_exit():
        try:
            with open(f"hosts/{host}.exit") as f:
                return f.read().strip() or "gone"
        except OSError:
            pass
        try:
            with open(f"hosts/{host}.pgid") as f:
                pgid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if not leader_is_ours(pgid):
            return "gone"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return None
        return None

    def leader_is_ours(pgid):
        # The process that now has the recorded id must have the launcher's start time (a
        # stranger may have the id by now). No such process: only our group's remaining
        # members can hold the id, which killpg then finds.
        try:
            with open(f"hosts/{host}.leader") as f:
                recorded = f.read().strip()
            with open(f"/proc/{pgid}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            return True
        return not recorded or fields[19] == recorded

    while True:
        state = launcher_state()
        before = dict(offsets)
        drain(launcher_log)
        for rank in sorted(owned):
            drain(f"metrics/rank-{rank}.jsonl")
        if offsets != before:
            out.write("F\n")
        now = time.time()
        if now - last_beat >= HEARTBEAT_S:
            out.write("H\n")
            last_beat = now
        if state is not None:
            out.write(f"X\t{state}\n")
            out.flush()
            return
        out.flush()
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        main()
