"""The rules of every section's keys are declared on their fields (``[run]``'s shared settings
on the trainer's, ``trainer.settings.run_settings.setting``)."""

from __future__ import annotations

import pytest

from remote.config.cluster import ClusterSection, HostSection, RunSection, SshSection
from remote.config.errors import ConfigError
from remote.config.exports import KubernetesSection
from remote.config.rules import host_problems
from remote.config.value_rules import key_problems, ssh_only_keys, upper_bounds


def test_the_keys_meaningless_on_a_local_host_are_the_fields_marked_ssh_only() -> None:
    assert ssh_only_keys(HostSection) == ("user", "port", "identity_file")
    said = dict(host_problems(HostSection, {"name": "a", "address": "local", "port": 22}))
    assert said["port"].startswith("has no effect on a local host")


@pytest.mark.parametrize(("section", "values", "key"), [
    (ClusterSection, {"name": "-bad"}, "name"),
    (ClusterSection, {"rendezvous_port": 70000}, "rendezvous_port"),
    (HostSection, {"address": "-oProxyCommand=x"}, "address"),
    (HostSection, {"slowdown": 0.5}, "slowdown"),
    (HostSection, {"nproc": 10**6}, "nproc"),
    (HostSection, {"allocator": "mimalloc"}, "allocator"),
    (SshSection, {"known_hosts": "off"}, "known_hosts"),
    (SshSection, {"max_parallel_connects": 0}, "max_parallel_connects"),
    (RunSection, {"name": "a\tb"}, "name"),
    (RunSection, {"on_host_loss": "drop"}, "on_host_loss"),
    (RunSection, {"max_restarts": -1}, "max_restarts"),
    (RunSection, {"hang_limit": 10**8}, "hang_limit"),
    (RunSection, {"data_dir": " "}, "data_dir"),
    (RunSection, {"momentum": -0.5}, "momentum"),
    (RunSection, {"global_batch": 0}, "global_batch"),
    (KubernetesSection, {"namespace": "Prod"}, "namespace"),
    (KubernetesSection, {"data_pvc": "my_claim"}, "data_pvc"),
    (KubernetesSection, {"runs_pvc_size": "lots"}, "runs_pvc_size"),
    (KubernetesSection, {"image": "-x"}, "image"),
])
def test_each_key_is_judged_by_what_its_field_declares(section: type, values: dict[str, object],
                                                      key: str) -> None:
    assert [k for k, _ in key_problems(section, values)] == [key]


def test_a_section_built_in_code_obeys_its_fields_rules_too() -> None:
    with pytest.raises(ConfigError, match="gpus: must be at least 0"):
        HostSection(name="a", address="local", gpus=-1)
    with pytest.raises(ConfigError, match="keepalive: must be at most 86400"):
        SshSection(keepalive=10**6)
    assert upper_bounds(SshSection)["keepalive"] == 86400
    with pytest.raises(ConfigError, match=r"\[kubernetes\] runs_pvc_size: is not a storage size"):
        KubernetesSection(runs_pvc_size="20 GB")
    with pytest.raises(ConfigError, match=r"\[run\] name: must not be empty"):
        RunSection(name=" ")
