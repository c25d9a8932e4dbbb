"""``corral trust HOST``: a host's key fetched, shown by its fingerprint and, once confirmed,
written to corral's known_hosts file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.hosts.known_hosts import host_pattern, recorded_keys, replace_host_key
from remote.hosts.ssh import fetch_host_key, resolve_endpoint


async def trust_host(config: ClusterConfig, host_name: str,
                     confirm: Callable[[str], bool]) -> str:
    """Fetch ``host_name``'s key, show it through ``confirm`` and, if confirmed, make it the
    host's one key in the known_hosts file (replacing a changed one); a line saying what was
    done.

    The question names the key's SHA256 fingerprint, so the user can compare it with the one
    the host's administrator publishes (``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``),
    and, for a changed key, the fingerprint it replaces.
    """
    host = next((h for h in config.hosts if h.name == host_name), None)
    if host is None:
        names = ", ".join(h.name for h in config.hosts)
        raise CorralError(f"no host named {host_name!r} in {config.path} (hosts: {names})")
    if host.is_local:
        return f"{host_name} is the local machine: no host key is involved"
    path = Path(config.ssh.known_hosts_file).expanduser()
    key = await fetch_host_key(host, config.ssh)
    name, port = resolve_endpoint(host, config.ssh)
    pattern = host_pattern(name, port)
    fingerprint = key.get_fingerprint("sha256")
    recorded = [k.get_fingerprint("sha256") for k in recorded_keys(path, name, port)]
    if recorded == [fingerprint]:
        return f"{host_name} ({pattern}): key {fingerprint} is already trusted in {path}"
    question = f"{host_name} ({pattern}) presents the {key.get_algorithm()} key {fingerprint}."
    if recorded:
        question += (f"\nWARNING: {path} records a DIFFERENT key for it: {', '.join(recorded)}."
                     " Replace it only if you know why the host's key changed.")
    if not confirm(question + "\nTrust this key?"):
        return f"nothing changed: {path} still records {', '.join(recorded) or 'no key'}"
    replaced = replace_host_key(path, name, port, key)
    what = f"replaced {replaced} old line(s) in" if replaced else "added to"
    return f"trusted {host_name} ({pattern}): key {fingerprint}, {what} {path}"
