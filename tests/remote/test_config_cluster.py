"""cluster.toml: the repository default loads, and each kind of mistake is named precisely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from console.cli import main
from profiles.user_errors import UsageError
from remote.config.cluster import (
    ClusterConfig,
    ClusterSection,
    ConfigError,
    HostSection,
    RunSection,
)
from remote.config.read import CLUSTER_TOML_MAX_BYTES, load_cluster, parse_cluster

REPO = Path(__file__).resolve().parents[2]

CLUSTER = """\
[cluster]
name = "lab"
master = "a"
"""
HOST_A = """\
[[hosts]]
name = "a"
address = "local"
gpus = 0
"""
HOST_B = """\
[[hosts]]
name = "b"
address = "b.example.org"
gpus = 2
"""


def valid(extra: str = "", *, hosts: str = HOST_A + HOST_B, cluster: str = CLUSTER) -> str:
    """A valid document (master "a" is local, so remote "b" needs master_addr) plus extra."""
    cluster = cluster + 'master_addr = "10.0.0.1"\n'
    return cluster + hosts + extra


def problems(text: str, path: Path = Path("conf/cluster.toml")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, path=path)
    lines = [str(p) for p in info.value.problems]
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return lines


def only_problem(text: str) -> str:
    lines = problems(text)
    assert len(lines) == 1, lines
    return lines[0].removeprefix("conf/cluster.toml: ")


# --- the repository default -------------------------------------------------------------------

def test_repository_cluster_toml_is_a_heterogeneous_local_demo() -> None:
    config = load_cluster(REPO / "cluster.toml")
    assert config.cluster.name == "demo" and config.master_host.name == "fast"
    assert all(h.is_local and h.known_nproc == 1 and h.threads == 1 for h in config.hosts)
    assert len({h.slowdown for h in config.hosts}) == len(config.hosts) >= 2
    assert config.world_size_hint == len(config.hosts)
    assert config.run.policy == "dynamic" and config.run.steps is not None
    assert config.run.global_batch >= config.world_size_hint


def test_parses_into_typed_frozen_sections() -> None:
    config = parse_cluster(valid('[run]\nsplit = [1, 2, 61]\nlr = 1\n[ssh]\nkeepalive = 0\n'),
                           path=Path("c.toml"))
    assert isinstance(config, ClusterConfig) and config.path == Path("c.toml")
    assert config.run.split == (1, 2, 61) and config.run.lr == 1.0
    assert isinstance(config.run.lr, float) and config.ssh.keepalive == 0.0
    assert [h.name for h in config.hosts] == ["a", "b"] and config.hosts[1].gpus == 2
    with pytest.raises(AttributeError):
        config.run.lr = 2.0  # type: ignore[misc]


# --- file-level problems ------------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value) and "no such file" in str(info.value)
    assert info.value.title == "cannot read nope.toml"


def test_directory_and_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_cluster(tmp_path)
    bad = tmp_path / "cluster.toml"
    bad.write_bytes(b'[cluster]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_cluster(bad)


def test_an_endless_or_huge_file_is_refused_not_read_for_ever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 59: `corral -c /dev/zero check` read 16 GB in 30 s; now it stops at 1 MiB."""
    assert main(["-c", "/dev/zero", "check"]) == 2
    said = capsys.readouterr().err
    assert "/dev/zero" in said and "more than 1 MiB" in said and "Traceback" not in said
    huge = tmp_path / "cluster.toml"
    huge.write_text('[cluster]\nname = "x"\n' + "# padding\n" * (CLUSTER_TOML_MAX_BYTES // 10))
    with pytest.raises(ConfigError, match="more than 1 MiB") as info:
        load_cluster(huge)
    assert str(huge) in str(info.value)


def test_invalid_toml_gives_line_and_column() -> None:
    line = only_problem('[cluster]\nname = "x"\nmaster = \n')
    assert line.startswith("invalid TOML:") and "line 3" in line


def test_config_error_is_a_usage_error_with_a_title_naming_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cluster(valid("[run]\nsteps = 0\n"), path=Path("/x/my.toml"))
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert info.value.title == "my.toml is invalid"
    assert str(info.value) == "/x/my.toml: [run] steps: must be at least 1, got 0"


# --- unknown names get a suggestion -------------------------------------------------------------

@pytest.mark.parametrize(("extra", "expected"), [
    ("[run]\nglobal_bacth = 8\n", "[run] global_bacth: unknown key; did you mean 'global_batch'?"),
    ("[ssh]\nConnect_Timeout = 3\n", "did you mean 'connect_timeout'?"),
    ("[rnu]\nsteps = 3\n", "[rnu]: unknown section"),
    ("[host]\nname = 'x'\n", "did you mean [[hosts]]?"),
])
def test_unknown_keys_and_sections_suggest_the_closest_name(extra: str, expected: str) -> None:
    assert expected in only_problem(valid(extra))


def test_unknown_host_key_names_the_entry() -> None:
    line = only_problem(valid(hosts=HOST_A + HOST_B + "prot = 2222\n"))
    assert line == 'hosts[1] (name "b").prot: unknown key; did you mean \'port\'?'


def test_a_top_level_key_is_pointed_to_its_section() -> None:
    assert "under [run]" in only_problem("steps = 5\n" + valid())


@pytest.mark.parametrize(("extra", "expected"), [
    ('[run]\nmodel = "resnet"\n', '[run] model: expected one of "simple_cnn", "resnet18", '
                                  '"resnet50", got a string ("resnet"); did you mean "resnet50"?'),
    ('[run]\npolicy = "dinamic"\n', 'did you mean "dynamic"?'),
    ('[run]\noptimizer = "adam"\n', 'did you mean "adamw"?'),
    ('[run]\nbackend = "NCCL"\n', 'did you mean "nccl"?'),
    ('[run]\ndataset = "cifar"\n', 'did you mean "cifar10"?'),
    ('[ssh]\nknown_hosts = "strict-ish"\n', 'did you mean "strict"?'),
])
def test_enum_values_suggest_the_closest_choice(extra: str, expected: str) -> None:
    assert expected in only_problem(valid(extra))


# --- types and ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize(("key_value", "expected"), [
    ('port = "22"', 'port: expected an integer, got a string ("22")'),
    ("port = 0", "port: must be a port number from 1 to 65535, got 0"),
    ("port = 65536", "port: must be a port number from 1 to 65535"),
    ("nproc = true", "nproc: expected an integer, got a boolean"),
    ("nproc = 0", "nproc: must be at least 1, got 0"),
    ("nproc = 3", "nproc: 3 ranks but only 2 GPUs"),
    ("threads = 1.5", "threads: expected an integer, got a float (1.5)"),
    ('gpus = "all"', 'gpus: expected an integer or "auto", got a string ("all")'),
    ("gpus = -1", "gpus: must be at least 0, got -1"),
    ("slowdown = 0.5", "slowdown: must be at least 1, got 0.5"),
    ("slowdown = nan", "slowdown: must be a finite number"),
    ("link_gbit = 0", "link_gbit: must be greater than 0, got 0"),
    ('link_gbit = "fast"', "link_gbit"),
    ("env = { OMP_NUM_THREADS = 4 }", 'env: expected a table of strings, but OMP_NUM_THREADS '
                                      'is an integer; quote it: "4"'),
    ('env = { "1BAD" = "x" }', 'env."1BAD": is not a valid environment variable name'),
    ('interface = "eth0; rm"', "interface: is not a network interface name"),
    ('interface = "a-very-long-interface"', "interface: is not a network interface name"),
    ('address = "-oProxyCommand=touch"', "address: must be one word not starting with '-'"),
    ('user = "bob smith"', "user: must be one word"),
    ('name = "b/2"', 'name: must be letters, digits'),
    (f'name = "{"b" * 64}"', "name: must be at most 63 characters"),
    (f'address = "{"a" * 64}.example"', "address: is not a usable host name"),
    (f'address = "{"a." * 127}b"', "address: is not a usable host name"),
])
def test_host_values_are_checked_and_named(key_value: str, expected: str) -> None:
    key = key_value.split(" ")[0]
    host_b = "".join(line for line in HOST_B.splitlines(keepends=True)
                     if not line.startswith(f"{key} "))
    line = only_problem(valid(hosts=HOST_A + host_b + key_value + "\n"))
    assert line.startswith("hosts[1] (name "), line
    assert expected in line


def test_a_hosts_micro_batch_is_refused_with_the_local_exchange() -> None:
    line = only_problem(valid('[run]\nexchange = "local"\n',
                              hosts=HOST_A + HOST_B + "micro_batch = 4\n"))
    assert line.startswith('hosts[1] (name "b").micro_batch: is not supported with '
                           'exchange = "local"'), line
    exact = parse_cluster(valid(hosts=HOST_A + HOST_B + "micro_batch = 4\n"), path="c.toml")
    assert exact.hosts[1].micro_batch == 4  # the exact exchange takes it


@pytest.mark.parametrize(("extra", "expected"), [
    ('[cluster_x]\n', "[cluster_x]: unknown section"),
    ("[run]\nsteps = 5\nepochs = 2\n",
     "[run] epochs: is given with steps: give either steps or epochs, not both"),
    ("[run]\nlr = 0\n", "[run] lr: must be greater than 0, got 0"),
    ("[run]\nlr = inf\n", "[run] lr: must be a finite number"),
    ("[run]\nseed = -1\n", "[run] seed: must be at least 0"),
    ("[run]\ncheckpoint_every = -5\n", "[run] checkpoint_every: must be at least 0"),
    ("[run]\nrebalance_every = 0\n", "[run] rebalance_every: must be at least 1"),
    ("[run]\nsamples = 10\nglobal_batch = 32\n", "[run] samples: 10 is smaller than global_batch"),
    ('[run]\ndataset = "cifar10"\n', '[run] data_dir: is required with dataset = "cifar10"'),
    ("[run]\nsplit = [30, 30, 30]\n",
     "[run] split: [30, 30, 30] sums to 90, but global_batch is 64"),
    ("[run]\nsplit = [70, -6, 0]\n", "[run] split: [70, -6, 0] has a negative share"),
    ("[run]\nsplit = [32, 32]\n",
     "[run] split: [32, 32] has 2 shares but the run has 3 ranks (a: 1, b: 2)"),
    ('[run]\nsplit = [1, "2"]\n', "[run] split: expected an array of integers, but element 1"),
    ("[run]\nglobal_batch = 2\n", "[run] global_batch: 2 is smaller than the 3 ranks"),
    ('[run]\nbackend = "nccl"\n', '[run] backend: "nccl" needs a GPU for every rank, but '
                                  'hosts[0] (name "a") has gpus = 0'),
    ("[ssh]\nconnect_timeout = 0\n", "[ssh] connect_timeout: must be greater than 0"),
    ("[ssh]\nmax_parallel_connects = 0\n", "[ssh] max_parallel_connects: must be at least 1"),
    ("[ssh]\nkeepalive = -1\n", "[ssh] keepalive: must be at least 0"),
    ("[run]\nsteps = 5.0\n", "[run] steps: expected an integer, got a float (5.0)"),
    ("[run]\nsteps = 99999999999999999999\n", "[run] steps: must be at most 1000000000000"),
    ("[run]\nseed = 9223372036854775808\n", "[run] seed: must be at most"),
    ("[ssh]\nkeepalive = true\n", "[ssh] keepalive: expected a number, got a boolean"),
    # Issue 59: local-mode settings that passed the check and failed after launch.
    ('[run]\nexchange = "local"\nouter_lr = 1e300\n', "[run] outer_lr: 1e+300 must be at most 10"),
    ('[run]\nexchange = "local"\nmicro_batch = 4\n',
     '[run] micro_batch: is not supported with exchange = "local" yet'),
])
def test_run_and_ssh_values_are_checked_and_named(extra: str, expected: str) -> None:
    assert expected in only_problem(valid(extra))


@pytest.mark.parametrize("cluster_line", [
    'rendezvous_port = 0', 'rendezvous_port = 70000', 'rendezvous_port = "autom"',
    'run_root = ""', 'name = "my cluster"', 'rendezvous_port = 1.5',
])
def test_cluster_values_are_checked_and_named(cluster_line: str) -> None:
    key = cluster_line.split(" ")[0]
    cluster = "".join(line for line in CLUSTER.splitlines(keepends=True)
                      if not line.startswith(f"{key} "))
    line = only_problem(valid(cluster=cluster + cluster_line + "\n"))
    assert line.startswith(f"[cluster] {cluster_line.split(' ')[0]}: "), line


def test_a_wrong_type_is_reported_once_without_knock_on_problems() -> None:
    # A mistyped global_batch must not also produce "split sums to ..., not 64 (the default)".
    line = only_problem(valid('[run]\nglobal_batch = "96"\nsplit = [32, 32, 32]\n'))
    assert line.startswith("[run] global_batch: expected an integer")
    line = only_problem(valid('[run]\ndataset = "cifar10"\ndata_dir = 5\n'))
    assert line.startswith("[run] data_dir: expected a string")


def test_split_length_is_not_checked_when_a_host_counts_its_gpus_at_run_time() -> None:
    hosts = HOST_A + HOST_B.replace("gpus = 2", 'gpus = "auto"')
    config = parse_cluster(valid("[run]\nsplit = [60, 4]\n", hosts=hosts), path=Path("c"))
    assert config.world_size_hint is None and config.run.split == (60, 4)


# --- hosts, master and identity files ----------------------------------------------------------

def test_duplicate_host_names_and_unknown_master() -> None:
    text = valid(cluster=CLUSTER.replace('"a"', '"aa"'), hosts=HOST_A + HOST_A)
    lines = problems(text)
    assert 'conf/cluster.toml: hosts[1] (name "a").name: duplicate host name; hosts[0] is ' \
           'already called "a"' in lines
    assert any('[cluster] master: "aa" is not the name of any [[hosts]] entry (hosts: "a"); '
               'did you mean "a"?' in line for line in lines)


def test_a_local_master_needs_master_addr_for_remote_workers() -> None:
    line = only_problem(CLUSTER + HOST_A + HOST_B)
    assert line.startswith("[cluster] master_addr: ") and '"b"' in line


def test_local_hosts_need_no_ssh_keys_and_reject_them() -> None:
    config = parse_cluster(CLUSTER + HOST_A, path=Path("c"))
    assert config.hosts[0].is_local and config.hosts[0].user is None
    line = only_problem(CLUSTER + HOST_A + 'identity_file = "~/.ssh/id"\n')
    assert line.startswith('hosts[0] (name "a").identity_file: has no effect on a local host')


@pytest.mark.parametrize(("hosts", "expected"), [
    ("", "[[hosts]]: no hosts"),
    ("hosts = []\n", "[[hosts]]: no hosts"),
    ('[hosts]\nname = "a"\n', "[[hosts]]: must be an array of tables"),
    ("hosts = [1]\n", "hosts[0]: must be a table, got an integer"),
    ('[[hosts]]\naddress = "local"\n', "hosts[0].name: missing; this key is required"),
])
def test_host_list_shape(hosts: str, expected: str) -> None:
    # A top-level "hosts = ..." must come before [cluster], or it would belong to it.
    lines = problems(hosts + CLUSTER if hosts.startswith("hosts") else CLUSTER + hosts)
    assert any(line.endswith(expected) or expected in line for line in lines), lines


def test_missing_cluster_section() -> None:
    assert only_problem(HOST_A).startswith("[cluster]: missing section")


def test_identity_file_must_be_readable_and_is_resolved(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("key")
    path = tmp_path / "cluster.toml"
    path.write_text(valid(hosts=HOST_A + HOST_B + 'identity_file = "keys/id"\n'))
    assert load_cluster(path).hosts[1].identity_file == str(tmp_path / "keys" / "id")
    path.write_text(valid(hosts=HOST_A + HOST_B + 'identity_file = "~/.ssh/missing"\n'))
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    expected = str(tmp_path / "home" / ".ssh" / "missing")
    assert f'{path}: hosts[1] (name "b").identity_file: "~/.ssh/missing" does not exist ' \
           f"(looked at {expected})" == str(info.value)
    if os.geteuid() != 0:  # root reads anything
        (tmp_path / "keys" / "id").chmod(0)
        path.write_text(valid(hosts=HOST_A + HOST_B + 'identity_file = "keys/id"\n'))
        with pytest.raises(ConfigError, match="not readable"):
            load_cluster(path)


# --- every problem at once ------------------------------------------------------------------------

def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = ('[cluster]\nname = "lab"\nmaster = "x"\nrendezvous_port = 0\n'
            '[[hosts]]\nname = "a"\naddress = "local"\nprot = 1\n'
            '[[hosts]]\nname = "a"\naddress = "local"\nslowdown = 0\n'
            '[run]\npolicy = "fast"\nsteps = -1\n[ssh]\nknown_hosts = "no"\n')
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, path=Path("cluster.toml"))
    wheres = [p.where for p in info.value.problems]
    assert wheres == [
        "[cluster] rendezvous_port", "[cluster] master", 'hosts[0] (name "a").prot',
        'hosts[1] (name "a").slowdown', 'hosts[1] (name "a").name', "[run] policy",
        "[run] steps", "[ssh] known_hosts",
    ]
    assert str(info.value).startswith("8 problems\n  cluster.toml: [cluster] rendezvous_port")


def test_the_doc_error_example_is_what_the_parser_prints() -> None:
    text = ('[cluster]\nname = "lab"\nmaster = "gpu3"\n'
            '[[hosts]]\nname = "gpu1"\naddress = "gpu1"\n'
            '[[hosts]]\nname = "gpu2"\naddress = "gpu2"\nprot = 22\n'
            '[run]\npolicy = "dinamic"\n')
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, path=Path("cluster.toml"))
    doc = (REPO / "docs" / "cluster-toml.md").read_text()
    assert f"{info.value.title}: {info.value}" in doc


# --- configs built in code obey the same rules ---------------------------------------------------

def test_dataclasses_validate_in_post_init() -> None:
    with pytest.raises(ConfigError, match=r'hosts \(name "a"\)\.port: has no effect'):
        HostSection(name="a", address="local", port=22)
    with pytest.raises(ConfigError, match=r"\[run\] steps: must be at least 1"):
        RunSection(steps=0)
    with pytest.raises(ConfigError, match=r"\[cluster\] name"):
        ClusterSection(name="", master="a")
    with pytest.raises(ConfigError, match="is not the name of any"):
        ClusterConfig(path=Path("c"), cluster=ClusterSection(name="c", master="z"),
                      hosts=(HostSection(name="a", address="local"),))


def test_neither_steps_nor_epochs_means_one_epoch() -> None:
    assert RunSection().epochs == 1 and RunSection().steps is None
    assert RunSection(steps=7).epochs is None
    assert parse_cluster(valid(), path=Path("c")).run.epochs == 1


@pytest.mark.parametrize(("nproc", "gpus", "known"), [
    (None, 0, 1), (None, 3, 3), (2, "auto", 2), (None, "auto", None), (1, 0, 1),
])
def test_known_nproc(nproc: int | None, gpus: int | str, known: int | None) -> None:
    host = HostSection(name="h", address="h.example.org", nproc=nproc, gpus=gpus)  # type: ignore[arg-type]
    assert host.known_nproc == known


def test_a_local_master_with_loopback_workers_needs_no_master_addr() -> None:
    loopback = HOST_B.replace("b.example.org", "127.0.0.1") + "port = 2222\n"
    config = parse_cluster(CLUSTER + HOST_A + loopback, path=Path("c"))
    assert config.cluster.master_addr is None


def test_a_cluster_name_of_a_megabyte_is_refused_in_one_short_line() -> None:
    line = only_problem(valid(cluster=f'[cluster]\nname = "{"x" * 1_000_000}"\nmaster = "a"\n'))
    assert line.startswith("[cluster] name: must be at most 63 characters"), line[:200]
    assert "got 1000000" in line and len(line) < 200
