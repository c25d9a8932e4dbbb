"""What the host-side wrapper (``remote/hosts/own_group.py``) adds to each command corral runs
over SSH without input: ``true`` run by ``sh -c`` as sent bare and as sent wrapped, the two
interleaved ``--rounds`` times on this machine (the host's side of the cost; the SSH round
trip, milliseconds more, is the same for both). Prints the medians and their ratio.

    python bench/own_group.py --rounds 200
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from remote.hosts.own_group import in_own_group


def _once(command: str) -> float:
    """Milliseconds from starting ``sh -c command`` to its end, its stdin held open (as the
    SSH channel is)."""
    began = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE)
    proc.wait()
    took = (time.perf_counter() - began) * 1000
    assert proc.stdin is not None
    proc.stdin.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="bare/wrapped pairs to time")
    args = parser.parse_args()
    bare, wrapped = "true", in_own_group("true", reads_channel=False)
    times: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for _ in range(args.rounds):
        times["bare"].append(_once(bare))
        times["wrapped"].append(_once(wrapped))
    a, b = statistics.median(times["bare"]), statistics.median(times["wrapped"])
    print(f"| bare | wrapped | added | ratio |\n|---:|---:|---:|---:|\n"
          f"| {a:.2f} ms | {b:.2f} ms | {b - a:.2f} ms | {b / a:.2f} |")


if __name__ == "__main__":
    main()
