"""A seat that opens on a running run replays its record first (``RankEvent.replayed``): the
notices of what the record holds went out when it happened, and none goes again; what comes
live after it is told as ever."""

from __future__ import annotations

from remote.config.exports import NotifySection
from remote.events import RankEvent
from remote.run.notify import NoticeRules
from trainer.events import CheckpointEvent, MembershipEvent, RebalanceEvent


def test_the_replayed_record_sends_nothing_again_the_live_tail_does() -> None:
    rules = NoticeRules(NotifySection(events=("benched", "checkpoint", "left")), "r1")
    bench = RebalanceEvent(t=13.0, rank=0, step=3, previous=(30, 30), split=(60, 0),
                           reason="beta's exchange costs more than it computes",
                           predicted_gain=0.2, times=(0.5, 0.5), policy="dynamic")
    saved = CheckpointEvent(t=14.0, rank=0, step=4, path="checkpoints/step-4.pt")
    left = MembershipEvent(t=15.0, rank=0, generation=1, step=5, change="left",
                           hosts=("beta",), cause="asked", world_size=1)
    for event in (bench, saved, left):
        assert rules.observe(RankEvent(host="alpha", event=event, replayed=True)) == []
    later = CheckpointEvent(t=16.0, rank=0, step=8, path="checkpoints/step-8.pt")
    (notice,) = rules.observe(RankEvent(host="alpha", event=later))
    assert notice.event == "checkpoint" and "step 8" in notice.body
