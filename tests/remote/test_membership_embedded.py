"""Live membership with nothing written (issue 78): ``corral init``'s demo cluster.toml, the
repository's own, takes ``corral leave`` and ``corral join`` of its middle host as it stands, on
a run started with ``--detach`` that nobody follows. The leave does not take down the host after
it (its rank moves down a place), the commands keep ``run.json`` up to date, so the host that
left joins again at once, and ``corral status`` and ``corral stop`` see the run's hosts now."""

from __future__ import annotations

from pathlib import Path

from remote.config.init import demo_toml
from remote.config.live_membership import membership_refusal
from remote.config.read import parse_cluster


def test_the_demo_cluster_toml_has_live_membership_with_nothing_written(
        tmp_path: Path) -> None:
    config = parse_cluster(demo_toml(), path=tmp_path / "cluster.toml")
    assert "live_membership" not in config.run.keys_set
    assert membership_refusal(config) is None
    off = parse_cluster(demo_toml().replace("[run]\n", "[run]\nlive_membership = false\n"),
                        path=tmp_path / "cluster.toml")
    assert membership_refusal(off) == "`[run] live_membership = false`"  # the way out


def test_a_master_that_is_not_the_first_host_gets_no_membership_and_says_why(
        tmp_path: Path) -> None:
    # Launch rank 0 serves the membership store on the first host; the ranks look for it on
    # the master's address: a run whose master is elsewhere would wait for a store never there.
    text = ('[cluster]\nname = "s"\nmaster = "b"\n[[hosts]]\nname = "a"\naddress = "local"\n'
            '[[hosts]]\nname = "b"\naddress = "local"\n')
    refusal = membership_refusal(parse_cluster(text, path=tmp_path / "cluster.toml"))
    assert refusal is not None and "is not the first host (a)" in refusal
    first = text.replace('master = "b"', 'master = "a"')
    assert membership_refusal(parse_cluster(first, path=tmp_path / "cluster.toml")) is None
