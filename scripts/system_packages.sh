#!/usr/bin/env bash
# The system packages the tests need, installed when run as root with apt (scripts/test.sh runs
# this): OpenSSH's sshd, iproute2, tcmalloc and python3-venv (the tests start real sshd daemons
# on loopback ports and, as root, clusters in network namespaces; tcmalloc is the allocator CPU
# ranks get where a host has it; python3-venv makes the project's .venv), then podman
# (daemonless) and runc for the container tests, where they can be had; elsewhere those tests
# skip, saying why; then Chromium, the headless browser of the browser view's test
# (tests/console/scenarios/test_serve_browser.py); then fish, zsh, tcsh and locales (worker accounts with other
# login shells, a Latin-1 locale). Their containers.conf (runc, no default ulimits: what podman needs on
# machines like the CI's) is written by the tests themselves. Nothing to do as another user.
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's own apt (unattended upgrades at boot, another test run's install) may hold
# dpkg's lock: wait for it, up to 10 minutes, rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! [ -x /usr/sbin/sshd ] || ! command -v ip >/dev/null \
        || ! { ldconfig -p | grep libtcmalloc_minimal >/dev/null; } \
        || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "corral: installing openssh-server, iproute2, tcmalloc and python3-venv" >&2
    apt_get update -q >/dev/null
    apt_get install -y -q --no-install-recommends openssh-server openssh-client iproute2 \
        libtcmalloc-minimal4 python3-venv >/dev/null
fi
if command -v apt-get >/dev/null && ! command -v podman >/dev/null; then
    echo "corral: installing podman and runc (the container tests)" >&2
    apt_get install -y -q --no-install-recommends podman runc >/dev/null 2>&1 \
        || { apt_get update -q >/dev/null \
             && apt_get install -y -q --no-install-recommends podman runc >/dev/null; } \
        || echo "corral: podman could not be installed; the container tests will skip" >&2
fi
if command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
    echo "corral: installing chromium (the browser view's test)" >&2
    apt_get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt_get update -q >/dev/null \
             && apt_get install -y -q --no-install-recommends chromium >/dev/null; } \
        || echo "corral: chromium could not be installed; the browser test will skip" >&2
fi
if command -v apt-get >/dev/null && { ! command -v fish >/dev/null || ! command -v zsh >/dev/null \
        || ! command -v tcsh >/dev/null || ! command -v localedef >/dev/null; }; then
    # Worker accounts with other login shells (tests/remote/scenarios/test_accounts_sshd.py) and the
    # Latin-1 locale the console's tests make with localedef.
    echo "corral: installing fish, zsh, tcsh and locales (the accounts' and locale tests)" >&2
    apt_get install -y -q --no-install-recommends fish zsh tcsh locales >/dev/null 2>&1 \
        || { apt_get update -q >/dev/null \
             && apt_get install -y -q --no-install-recommends fish zsh tcsh locales >/dev/null; } \
        || echo "corral: fish/zsh/tcsh/locales could not be installed; those tests will skip" >&2
fi
