"""A resumed run's local copy first gets the lines its follower never read (``catch_up`` in
``remote/run/stream.py``): the last steps and end event ranks wrote as they were stopped, after
the follower had gone; so the report counts every step of the earlier attempt. A line the host
is still writing (no newline yet) is left for the follower."""

from __future__ import annotations

from pathlib import Path

from remote.config.cluster import HostSection
from remote.hosts.transport import LocalTransport
from remote.records.collected import CollectedCopy
from remote.run.stream import catch_up, remote_sizes
from trainer.run_layout import IN_RUN_DIR, RunLayout


async def test_the_lines_a_stopped_rank_wrote_after_its_follower_reach_the_copy(
        tmp_path: Path) -> None:
    run_dir, local = tmp_path / "run", tmp_path / "local"
    events = run_dir / IN_RUN_DIR.events(0)
    events.parent.mkdir(parents=True)
    read = '{"event":"start"}\n{"event":"step","step":1}\n'
    unread = '{"event":"step","step":2,"note":"é"}\n{"event":"end","status":"interrupted"}\n'
    events.write_text(read + unread + '{"event":"st', encoding="utf-8")
    copy = CollectedCopy(local, "h0")  # the first attempt's follower read two lines
    path = IN_RUN_DIR.events(0)
    copy.append(path, '{"event":"start"}', 18)
    copy.append(path, '{"event":"step","step":1}', len(read))
    copy.save()
    transport = LocalTransport(HostSection(name="h0", address="local",
                                           workdir=str(tmp_path / "work")))
    sizes = await remote_sizes(transport, str(run_dir))
    assert sizes[path] == events.stat().st_size
    await catch_up(transport, str(run_dir), copy, sizes)
    copy.save()
    assert copy.offsets[path] == len((read + unread).encode("utf-8"))
    copy.close()
    copied = Path(RunLayout(local).collected("h0")) / path
    assert copied.read_text(encoding="utf-8") == read + unread
