"""What ``[notify]`` costs a followed run's event stream when the receiver never answers.

A stream of synthetic step events (2 ranks) with a checkpoint every 50 steps (each one a notice)
passes through ``remote.run.notify.notified`` to a loopback socket that accepts and never
answers, against the same stream sent to a receiver that answers at once and with no notifier
(what the notices cost in CPU is the answering arm; what a hung receiver adds, the difference
between the two); interleaved ``--repeat`` times, medians of
the per-event time (the drain at the end, bounded by ``timeout_s``, is measured apart).

    python bench/notify_load.py              # 4000 events, 7 rounds
    python bench/notify_load.py --quick      # 1000 events, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remote.config.exports import NotifySection
from remote.events import RankEvent, RunEvent
from remote.run.notify import NoticeRules, NoticeSender, notified
from trainer.events import CheckpointEvent, StepEvent


def events(count: int) -> list[RunEvent]:
    """``count`` step events of two ranks, a checkpoint every 50 steps."""
    out: list[RunEvent] = []
    for i in range(count):
        step, rank = i // 2 + 1, i % 2
        out.append(RankEvent(host=f"h{rank}", event=StepEvent(
            t=float(step), rank=rank, step=step, epoch=0, local_batch=8, loss=1.0,
            compute_s=0.5, step_s=1.0, global_loss=1.0 if rank == 0 else None)))
        if rank == 1 and step % 50 == 0:
            out.append(RankEvent(host="h0", event=CheckpointEvent(t=float(step), rank=0,
                                                                  step=step, path="c.pt")))
    return out


async def one_round(stream: list[RunEvent], section: NotifySection | None) -> tuple[float, float]:
    """Seconds per event through the stream, and the drain's seconds after its last event."""
    async def source() -> AsyncIterator[RunEvent]:
        for event in stream:
            yield event

    it: AsyncIterator[RunEvent] = source()
    if section is not None:
        it = notified(it, NoticeRules(section, "bench"), NoticeSender(section))
    began = time.perf_counter()
    seen = 0
    async for _ in it:
        seen += 1
        if seen == len(stream):
            last = time.perf_counter()
    ended = time.perf_counter()
    return (last - began) / len(stream), ended - last


class Answer(BaseHTTPRequestHandler):
    """Reads a notice and answers 200 at once."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    count, rounds = (1000, 3) if args.quick else (4000, 7)
    rounds = args.repeat or rounds
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    section = NotifySection(urls=(f"json://127.0.0.1:{silent.getsockname()[1]}/",),
                            events=("checkpoint",), timeout_s=2.0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answered = NotifySection(urls=(f"json://127.0.0.1:{server.server_address[1]}/",),
                             events=("checkpoint",), timeout_s=2.0)
    stream = events(count)
    plain, quick, hung, drains = [], [], [], []
    for _ in range(rounds):  # interleaved: the machine's load falls on every arm alike
        plain.append(asyncio.run(one_round(stream, None))[0])
        quick.append(asyncio.run(one_round(stream, answered))[0])
        per_event, drain = asyncio.run(one_round(stream, section))
        hung.append(per_event)
        drains.append(drain)
    server.shutdown()
    a, b, c = statistics.median(plain), statistics.median(hung), statistics.median(quick)
    print(f"{len(stream)} events, {rounds} rounds interleaved, "
          f"{sum(isinstance(e.event, CheckpointEvent) for e in stream if isinstance(e, RankEvent))}"
          " notices to a receiver that never answers")
    print(f"  no notifier:        {a * 1e6:8.1f} us/event (median)")
    print(f"  answering receiver: {c * 1e6:8.1f} us/event (median)")
    print(f"  hung receiver:      {b * 1e6:8.1f} us/event (median), hung / answering "
          f"{b / c:.2f}")
    print(f"  drain after the end: {statistics.median(drains):6.2f} s (bound: timeout_s = "
          f"{section.timeout_s:g} s)")
    silent.close()


if __name__ == "__main__":
    main()
