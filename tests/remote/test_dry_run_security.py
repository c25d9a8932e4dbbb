"""``corral run --dry-run`` shows a host's env names but never their values, and the firewall
lines for the rendezvous port it chose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_do_not_show_123"


def test_dry_run_names_env_without_values_and_prints_firewall_lines(tmp_path: Path) -> None:
    host = (f'address = "local"\npython = "{sys.executable}"\nworkdir = "{tmp_path}/work"\n'
            "gpus = 0\nnproc = 1\nthreads = 1\n")
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "d"\nrun_root = "{tmp_path}/runs"\n\n'
                    f'[[hosts]]\nname = "a"\n{host}env = {{ HF_TOKEN = "{SECRET}" }}\n\n'
                    f'[[hosts]]\nname = "b"\n{host}\n[run]\nsteps = 2\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(path), "run", "--dry-run"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert SECRET not in out and "with env HF_TOKEN from cluster.toml" in out
    port = re.search(r"--rdzv-endpoint 127\.0\.0\.1:(\d+)", out)
    assert port is not None
    assert "iptables -A INPUT -p tcp -s 127.0.0.1 -j ACCEPT" in out
    assert f"iptables -A INPUT -p tcp --dport {port.group(1)} -j DROP" in out
    assert "iptables -A INPUT -p tcp --dport 32768:60999 -j DROP" in out
