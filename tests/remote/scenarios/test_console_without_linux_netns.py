"""The console side of corral on a machine that is not Linux (a Mac driving Linux hosts): no
``/proc``, no ``ip``, no ``setsid`` where corral itself runs. ``corral check``, ``run
--detach``, ``attach --headless``, ``stop`` and ``report`` still work when the console machine
is not a training host: each runs in a mount namespace of its own whose ``/proc`` is an empty
tmpfs, with a PATH that holds no program at all, against the namespace hosts over SSH.

Two hosts (a master and a worker, so the check's mesh and the run span hosts over SSH), each
emulating a device 4 times slower: the run trains until the test stops it, and its ranks then
mostly sleep (trainer/step/slowdown.py) instead of computing while the console attaches."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

try:
    import netns
except ImportError:  # collected as a package module
    from tests.remote import netns  # type: ignore[no-redef]

pytestmark = [pytest.mark.netns, pytest.mark.sshd, pytest.mark.slow]

RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 480\nglobal_batch = 24\n'
       'steps = 400\npolicy = "static"\ncheckpoint_every = 1000\n')
HOSTS = ("n1", "n2")
SLOW = {name: "slowdown = 4.0\n" for name in HOSTS}
# /proc hidden, then corral started with a PATH where nothing is found.
BARE = 'mount -t tmpfs none /proc && PATH=/nonexistent exec "$0" "$@"'


def bare(box: netns.NetnsCluster, *args: str) -> list[str]:
    return box.in_ctl("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", BARE,
                      sys.executable, *args)


def corral(box: netns.NetnsCluster, *args: str, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
    argv = bare(box, "-m", "console", "-c", str(box.root / "cluster.toml"), *args)
    _, env = netns.corral_command(box)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=netns.REPO, env=env)


def test_check_run_attach_stop_report_without_proc_ip_or_setsid(
    box: netns.NetnsCluster,
) -> None:
    _, env = netns.corral_command(box)
    world = subprocess.run(bare(box, "-c", "import os, shutil; print(os.path.exists("
                                "'/proc/self'), shutil.which('ip'), shutil.which('setsid'))"),
                           capture_output=True, text=True, env=env, timeout=60)
    assert world.stdout.split() == ["False", "None", "None"], world.stdout + world.stderr

    box.write_cluster_toml(sys.executable, run=RUN, order=HOSTS, host_lines=SLOW)
    checked = corral(box, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    started = corral(box, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"box-[\w-]+", started.stdout + started.stderr)
    assert run_id is not None, started.stdout + started.stderr
    attach = subprocess.Popen(bare(box, "-m", "console", "-c", str(box.root / "cluster.toml"),
                                   "attach", "--headless", run_id.group(0)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=netns.REPO)
    try:
        assert attach.stdout is not None
        deadline, followed = time.monotonic() + 240, False
        for line in attach.stdout:  # attached once its follower prints a step
            followed = line.startswith("step ")
            if followed or time.monotonic() > deadline:
                break
        assert followed
        stopped = corral(box, "stop", run_id.group(0), "--grace", "2")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        attach.wait(timeout=120)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    report = corral(box, "report", run_id.group(0))
    assert report.returncode == 0, report.stdout + report.stderr
    assert run_id.group(0) in report.stdout and "stopped" in report.stdout
    assert box.processes_left() == {}
