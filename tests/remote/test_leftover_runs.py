"""The ``corral stop`` a leftovers line gives reaches the run: this cluster's own, another
cluster's on the shared ``run_root`` with that cluster's file, or one started elsewhere."""

from __future__ import annotations

from pathlib import Path

from remote.checks.leftover_runs import leftovers_line
from remote.config.cluster import ClusterConfig
from remote.config.read import load_cluster
from remote.records.runs import RunInfo, new_run_id, write_run_info


def cluster(folder: Path, name: str, run_root: Path) -> ClusterConfig:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster.toml"
    path.write_text(f'[cluster]\nname = "{name}"\nmaster = "a"\nrun_root = "{run_root}"\n'
                    '[[hosts]]\nname = "a"\naddress = "local"\ngpus = 0\n', encoding="utf-8")
    return load_cluster(path)


def test_each_leftover_run_gets_the_stop_that_reaches_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    mine = cluster(tmp_path / "mine", "lab", runs)
    other = cluster(tmp_path / "other dir", "gpu-box", runs)
    own, theirs, elsewhere = new_run_id("lab"), new_run_id("gpu-box"), new_run_id("cloud")
    write_run_info(other, RunInfo(run_id=theirs, cluster="gpu-box", state="running",
                                  started=0.0, hosts=("a",), config_path=str(other.path)))
    named, hint = leftovers_line(mine, [own, theirs, elsewhere])
    assert f"{theirs} (cluster 'gpu-box' of {other.path})" in named
    assert f"{elsewhere} (another cluster's run, started from another machine)" in named
    stops = dict(zip(sorted([own, theirs, elsewhere]), hint.split("; "), strict=True))
    assert stops[own] == f"corral stop {own}"
    assert stops[theirs] == f"corral stop -c '{other.path}' {theirs}"  # quoted: a space
    assert stops[elsewhere].startswith(f"corral stop -c <its cluster.toml> {elsewhere}")
