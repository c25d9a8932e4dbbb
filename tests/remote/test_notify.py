"""``[notify]``: a run's notices reach a real HTTP receiver on loopback through apprise's
``json://`` URL, and a receiver that never answers holds nothing up."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.config.exports import NotifySection
from remote.config.read import load_cluster
from remote.events import LogLine, RankEvent, RunEvent, RunStatus
from remote.run.notify import NoticeRules, NoticeSender, RunNotice, notified, send_test
from trainer.events import (
    CheckpointEvent,
    MembershipEvent,
    RebalanceEvent,
    StartEvent,
    StepEvent,
)


class Receiver:
    """A loopback HTTP server that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, str]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, within_s: float) -> float:
        """Seconds until ``count`` bodies came (fails past ``within_s``)."""
        began = time.monotonic()
        while len(self.bodies) < count:
            assert time.monotonic() - began < within_s, f"{len(self.bodies)} notices came"
            time.sleep(0.01)
        return time.monotonic() - began


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def start(rank: int, host: str) -> RankEvent:
    return RankEvent(host=host, event=StartEvent(
        t=10.0, rank=rank, world_size=2, local_rank=0, host=host, pid=1, device="cpu",
        device_name="Xeon", backend="gloo", model="m", dataset="d", global_batch=60,
        split=(30, 30), policy="dynamic", step=0, total_steps=100, steps_per_epoch=50,
        threads=1, slowdown=1.0))


def step(rank: int, host: str, n: int, step_s: float = 1.0) -> RankEvent:
    return RankEvent(host=host, event=StepEvent(
        t=10.0 + n * step_s, rank=rank, step=n, epoch=0, local_batch=30, loss=1.0,
        compute_s=step_s / 2, step_s=step_s, global_loss=1.0 if rank == 0 else None))


def training(steps: int) -> list[RunEvent]:
    events: list[RunEvent] = [start(0, "alpha"), start(1, "beta"),
                              RunStatus(t=10.0, run_id="r1", state="running")]
    for n in range(1, steps + 1):
        events += [step(0, "alpha", n), step(1, "beta", n)]
    return events


async def follow(events: list[RunEvent], section: NotifySection) -> tuple[list[RunEvent],
                                                                         NoticeSender]:
    async def stream() -> AsyncIterator[RunEvent]:
        for event in events:
            yield event

    sender = NoticeSender(section)
    seen = [e async for e in notified(stream(), NoticeRules(section, "r1"), sender)]
    return seen, sender


def test_a_failed_run_sends_one_notice_naming_host_rank_and_error(receiver: Receiver) -> None:
    error = "RuntimeError: CUDA error: an illegal memory access was encountered"
    failed = RunStatus(t=20.0, run_id="r1", state="failed", failed_host="beta", failed_rank=1,
                       detail=f"beta rank 1: {error}")
    section = NotifySection(urls=(receiver.url,))
    seen, _ = asyncio.run(follow([*training(3), failed], section))
    assert seen[-1] == failed  # the stream passes unchanged
    assert receiver.wait_for(1, within_s=5.0) < 5.0
    (body,) = receiver.bodies  # exactly one: started and finished are not asked for
    assert "beta" in body["title"] and "rank 1" in body["title"]
    assert error in body["message"]


def test_a_finished_run_sends_its_samples_per_s_and_duration(receiver: Receiver) -> None:
    done = RunStatus(t=40.0, run_id="r1", state="completed")
    section = NotifySection(urls=(receiver.url,), events=("finished",))
    asyncio.run(follow([*training(30), done], section))
    receiver.wait_for(1, within_s=5.0)
    (body,) = receiver.bodies
    assert "finished" in body["title"]
    # 60 samples a step of 1 s; the first event at t=10 and the last at t=40
    assert "60.0 samples/s" in body["message"] and "0.5 min" in body["message"]


def test_a_receiver_that_never_answers_delays_no_event() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections in the backlog, never reads or answers
    try:
        url = f"json://127.0.0.1:{silent.getsockname()[1]}/"
        section = NotifySection(urls=(url,), events=("started", "checkpoint", "failed"),
                                timeout_s=1.0)
        events = training(50)
        events += [RankEvent(host="alpha", event=CheckpointEvent(t=70.0, rank=0, step=50,
                                                                path=f"c{i}.pt"))
                   for i in range(20)]
        failed = RunStatus(t=80.0, run_id="r1", state="failed", detail="x")
        began = time.monotonic()
        seen_at: list[float] = []

        async def run() -> NoticeSender:
            async def stream() -> AsyncIterator[RunEvent]:
                for event in [*events, failed]:
                    yield event

            sender = NoticeSender(section)
            async for event in notified(stream(), NoticeRules(section, "r1"), sender):
                if event is failed:
                    seen_at.append(time.monotonic() - began)
            return sender

        sender = asyncio.run(run())
        assert seen_at[0] < 0.5  # every event through at once, 22 notices hanging
        assert time.monotonic() - began < 0.5 + section.timeout_s + 1.0  # the drain is bounded
        (line,) = sender.take_warnings()  # said once, not 22 times
        assert "did not answer" in line or "not sent" in line
    finally:
        silent.close()


def test_benched_rejoined_and_checkpoint_name_the_host() -> None:
    section = NotifySection(events=("benched", "rejoined", "checkpoint"), bench_minutes=0.001)
    rules = NoticeRules(section, "r1")
    for event in training(2):
        assert rules.observe(event) == []
    move = RebalanceEvent(t=13.0, rank=0, step=3, previous=(30, 30), split=(60, 0),
                          reason="beta's exchange costs more than it computes", predicted_gain=0.2,
                          times=(0.5, 0.5), policy="dynamic")
    (bench,) = rules.observe(RankEvent(host="alpha", event=move))
    assert bench.event == "benched" and "beta" in bench.title
    back = RebalanceEvent(t=14.0, rank=0, step=4, previous=(60, 0), split=(40, 20),
                          reason="re-probed", predicted_gain=0.1, times=(0.5, 0.5),
                          policy="dynamic")
    (rejoin,) = rules.observe(RankEvent(host="alpha", event=back))
    assert rejoin.event == "rejoined" and "beta" in rejoin.title
    (ckpt,) = rules.observe(RankEvent(host="alpha", event=CheckpointEvent(
        t=15.0, rank=0, step=4, path="checkpoints/step-4.pt")))
    assert "step 4" in ckpt.body


def test_a_host_that_joins_or_leaves_the_running_run_is_told_with_why() -> None:
    rules = NoticeRules(NotifySection(events=("joined", "left")), "r1")
    for event in training(2):
        assert rules.observe(event) == []
    lost = MembershipEvent(t=13.0, rank=0, generation=1, step=3, change="left", hosts=("beta",),
                           cause="unreachable", world_size=1, redone_steps=1)
    (left,) = rules.observe(RankEvent(host="alpha", event=lost))
    assert left.event == "left" and "beta left" in left.title
    assert "step 3" in left.body and "unreachable" in left.body and "1 ranks go on" in left.body
    came = replace(lost, generation=2, step=9, change="joined", cause=None, world_size=2)
    (joined,) = rules.observe(RankEvent(host="alpha", event=came))
    assert joined.event == "joined" and "beta joined" in joined.title
    refused = replace(came, change="refused", reason="torch 2.6.0 there, 2.13.0 here")
    (no,) = rules.observe(RankEvent(host="alpha", event=refused))
    assert "join refused" in no.title and "torch 2.6.0" in no.body
    quiet = NoticeRules(NotifySection(events=("failed",)), "r1")
    assert quiet.observe(RankEvent(host="alpha", event=lost)) == []  # not asked for


def test_throughput_that_stays_low_for_the_minutes_given_is_told_once() -> None:
    section = NotifySection(events=("slow",), slow_percent=30, slow_minutes=1)
    rules = NoticeRules(section, "r1")
    notices = [n for e in training(10) for n in rules.observe(e)]
    for n in range(11, 60):  # steps of 2 s: half the samples/s, for over a minute
        for rank, host in ((0, "alpha"), (1, "beta")):
            event = RankEvent(host=host, event=StepEvent(
                t=20.0 + (n - 10) * 2.0, rank=rank, step=n, epoch=0, local_batch=30, loss=1.0,
                compute_s=1.0, step_s=2.0, global_loss=1.0 if rank == 0 else None))
            notices += rules.observe(event)
    (slow,) = notices
    assert "30.0 samples/s" in slow.body and "best 60.0" in slow.body


def test_a_secret_comes_from_the_environment_and_a_missing_one_is_named(
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    section = NotifySection(urls=(receiver.url + "${HOOK_PATH}",))
    monkeypatch.delenv("HOOK_PATH", raising=False)
    with pytest.raises(UsageError, match=r"HOOK_PATH.*export HOOK_PATH"):
        NoticeSender(section)
    monkeypatch.setenv("HOOK_PATH", "s3cr3t")
    assert NoticeSender(section).urls == [receiver.url + "s3cr3t"]


def test_notify_test_sends_one_and_a_bad_section_is_named(receiver: Receiver,
                                                         tmp_path: Path) -> None:
    toml = tmp_path / "cluster.toml"
    base = '[cluster]\nname = "c"\n[[hosts]]\nname = "a"\naddress = "local"\n'
    toml.write_text(base + f'[notify]\nurls = ["{receiver.url}"]\n')
    assert send_test(load_cluster(toml)) == []
    receiver.wait_for(1, within_s=5.0)
    assert "test" in receiver.bodies[0]["message"]
    toml.write_text(base + '[notify]\nevents = ["failed", "explode"]\nurls = ["nope"]\n')
    with pytest.raises(UsageError) as caught:
        load_cluster(toml)
    assert "[notify] events[1]" in str(caught.value) and "[notify] urls[0]" in str(caught.value)


def test_a_log_line_passes_through_unchanged(receiver: Receiver) -> None:
    line = LogLine(t=1.0, host="alpha", rank=0, text="hello")
    seen, _ = asyncio.run(follow([line], NotifySection(urls=(receiver.url,))))
    assert seen == [line] and receiver.bodies == []


def test_corral_notify_test_sends_one_from_the_command_line(receiver: Receiver, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    from console.cli import main

    toml = tmp_path / "cluster.toml"
    toml.write_text('[cluster]\nname = "c"\n[[hosts]]\nname = "a"\naddress = "local"\n'
                    f'[notify]\nurls = ["{receiver.url}"]\n')
    assert main(["notify", "--test", "-c", str(toml)]) == 0
    assert len(receiver.bodies) == 1 and "sent a test notice" in capsys.readouterr().out


def test_corral_check_names_apprise_when_notify_has_urls(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from remote.checks.trackers import tracker_items

    toml = tmp_path / "cluster.toml"
    toml.write_text('[cluster]\nname = "c"\n[[hosts]]\nname = "a"\naddress = "local"\n'
                    '[notify]\nurls = ["ntfy://topic"]\n')
    (found,) = tracker_items(load_cluster(toml))
    assert found.ok and found.name == "notify"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "apprise" else real(name, *a))
    (missing,) = tracker_items(load_cluster(toml))
    assert not missing.ok and "corral[notify]" in missing.hint


def test_each_notice_has_the_apprise_type_of_its_event(receiver: Receiver) -> None:
    failed = RunStatus(t=20.0, run_id="r1", state="failed", failed_host="beta", failed_rank=1,
                       detail="beta rank 1: ValueError")
    section = NotifySection(urls=(receiver.url,), events=("failed", "started"))
    asyncio.run(follow([*training(3), failed], section))
    receiver.wait_for(2, within_s=30.0)
    assert sorted(body["type"] for body in receiver.bodies) == ["failure", "info"]
    done = RunStatus(t=40.0, run_id="r1", state="completed")
    rules = NoticeRules(NotifySection(events=("finished",)), "r1")
    notices = [n for e in [*training(3), done] for n in rules.observe(e)]
    assert [n.level for n in notices] == ["success"]


def test_benched_and_rejoined_are_told_once_per_host_per_bench_minutes() -> None:
    rules = NoticeRules(NotifySection(events=("benched", "rejoined"), bench_minutes=1.0), "r1")
    for event in training(2):
        rules.observe(event)
    told = []
    for n, t in enumerate((13.0, 16.0, 19.0, 80.0)):  # flapping 3 s apart, then a minute on
        split = (60, 0) if n % 2 == 0 else (40, 20)
        previous = (40, 20) if n % 2 == 0 else (60, 0)
        told += rules.observe(RankEvent(host="alpha", event=RebalanceEvent(
            t=t, rank=0, step=3 + n, previous=previous, split=split, reason="probe",
            predicted_gain=0.1, times=(0.5, 0.5), policy="dynamic")))
    assert [(n.event, "beta" in n.title) for n in told] == [("benched", True),
                                                            ("rejoined", True)]


def test_one_bad_url_among_good_ones_is_named_alone(receiver: Receiver) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    bad = f"json://127.0.0.1:{closed.getsockname()[1]}/"  # bound, never listening: refused
    section = NotifySection(urls=(receiver.url, bad), timeout_s=30.0)
    sender = NoticeSender(section)
    sender.send(RunNotice(event="failed", title="r1 failed", body="beta rank 1"))
    sender.drain()
    closed.close()
    (warning,) = sender.take_warnings()
    assert f"not sent to {bad}" in warning and receiver.url not in warning
    assert len(receiver.bodies) == 1  # the good one got it


def test_stopped_names_the_step_the_newest_checkpoint_and_the_duration() -> None:
    rules = NoticeRules(NotifySection(events=("stopped",)), "r1")
    events = [*training(4), RankEvent(host="alpha", event=CheckpointEvent(
        t=14.0, rank=0, step=4, path="checkpoints/step-4.pt"))]
    for event in events:
        rules.observe(event)
    (notice,) = rules.observe(RunStatus(t=30.0, run_id="r1", state="stopped",
                                        detail="stopped by corral stop"))
    assert notice.body.startswith("stopped by corral stop; at step 4; newest checkpoint step 4 "
                                  "(checkpoints/step-4.pt); after ")
