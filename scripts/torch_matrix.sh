#!/usr/bin/env bash
# The torch releases CI tests besides the pinned one: the floor and the newest of the range
# corral admits (trainer/compat.py, TESTED_TORCH). For each, a virtual environment holding that
# torch, which sees everything else (pytest, corral's dependencies) in the main environment.
#   scripts/torch_matrix.sh            print each environment's python, building what is missing
#   scripts/torch_matrix.sh --sizes    also print each environment's size and build seconds
#   scripts/torch_matrix.sh --build    only build what is missing: PY may then be any python3
#                                      of the main environment's version (it need not exist yet)
# Sourced by nothing: scripts/test.sh calls it (PY must name the main environment's python).
#
# The environments live outside the checkout (CORRAL_TORCH_VENVS, default
# ~/.cache/corral/torch-venvs) so a fresh clone on the same machine reuses them; one is rebuilt
# only when its marker file is missing. One call at a time holds them (a lock file beside
# them): a second waits for the first's builds instead of starting them over. PyPI's torch
# wheels are CUDA builds that import only beside their nvidia-* libraries, so those are
# installed too; triton (the GPU kernel compiler, unused on the CPU) is left out. The installer
# is uv (pinned below; put in a small environment of its own beside the matrix's the first
# time, its cache there too): it installs the 4.5 GB of wheels for under half the CPU pip takes,
# and leaves torch's modules to be compiled when first imported (docs/benchmarks/ci-time.md "The torch
# matrix built by uv"). Where uv cannot be had, pip builds them as before. Both run without
# the machine's installer configuration: a machine-wide cap on torch releases would otherwise
# refuse the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PY:?PY must name the python of the main environment, as scripts/python.sh sets it}"
sizes=false
build_only=false
case "${1:-}" in
    --sizes) sizes=true ;;
    --build) build_only=true ;;
esac
root=${CORRAL_TORCH_VENVS:-$HOME/.cache/corral/torch-venvs}
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
releases=$("$PY" -c 'from trainer.compat import TESTED_TORCH; print(*TESTED_TORCH)')
mkdir -p "$root"
if command -v flock >/dev/null; then
    exec 9> "$root/.lock"
    flock 9
fi

UV=uv==0.13.9  # the installer's release (--excludes, below, is one of its options)
LEFT_OUT=triton  # torch's requirement that neither installer installs (the GPU kernel compiler)

uv_tool() {  # uv_tool: the path of uv, installed beside the environments once; fails without it
    local tool=$root/.uv
    if [ ! -x "$tool/bin/uv" ]; then
        rm -rf "$tool"
        if ! { "$PY" -m venv "$tool" \
               && "$tool/bin/python" -m pip install -q --disable-pip-version-check "$UV"; } >&2
        then
            rm -rf "$tool"
            return 1
        fi
    fi
    echo "$tool/bin/uv"
}

install_with_uv() {  # install_with_uv UV VENV RELEASE: torch and its libraries but LEFT_OUT
    local uv=$1 venv=$2 release=$3
    # The certificates pip is told to trust, where it is told (else uv's own, or SSL_CERT_FILE's).
    local trust=()
    [ -z "${PIP_CERT:-}" ] || trust=("SSL_CERT_FILE=$PIP_CERT")
    env "${trust[@]}" UV_NO_CONFIG=1 UV_CACHE_DIR="$root/.uv-cache" \
        "$uv" pip install -q --python "$venv/bin/python" --excludes <(echo "$LEFT_OUT") \
        "torch==$release"
}

install_with_pip() {  # install_with_pip VENV RELEASE: the same with pip
    local venv=$1 release=$2
    local pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
    PIP_CONFIG_FILE=/dev/null "${pip[@]}" --no-deps "torch==$release"
    local needs  # read by the new environment's own python (pip brings the parser)
    needs=$(LEFT_OUT=$LEFT_OUT "$venv/bin/python" - <<'EOF'
import os
from importlib.metadata import distribution
from pip._vendor.packaging.requirements import Requirement
torch = distribution("torch")
needs = [Requirement(r) for r in torch.requires or []]
extras = {r.name: f"[{','.join(sorted(r.extras))}]" if r.extras else "" for r in needs}
print(*(f"{r.name}{extras[r.name]}{r.specifier}" for r in needs
        if r.name != os.environ["LEFT_OUT"]
        and (r.marker is None or r.marker.evaluate({"extra": ""}))))
EOF
)
    # shellcheck disable=SC2086  # one word per requirement
    PIP_CONFIG_FILE=/dev/null "${pip[@]}" $needs
}

build() {  # build VENV RELEASE
    local venv=$1 release=$2 started=$SECONDS uv
    rm -rf "$venv"
    echo "corral: building $venv (torch $release, CUDA wheel, about 3 GB)" >&2
    if ! { uv=$(uv_tool) && "$PY" -m venv --without-pip "$venv" \
           && install_with_uv "$uv" "$venv" "$release"; }; then
        echo "corral: uv could not install torch $release; pip does" >&2
        rm -rf "$venv"
        "$PY" -m venv "$venv"
        install_with_pip "$venv" "$release"
    fi
    # The check imports what a rank does (torch's launcher, and torch._dynamo, which the first
    # optimizer brings), so that their modules are compiled once, here, not by every test
    # process that starts before one has written them.
    "$venv/bin/python" -c "import torch, torch.distributed.run
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
assert torch.__version__.split('+')[0] == '$release'"
    echo "$((SECONDS - started))" > "$venv/.corral-built"
}

see_main_env() {  # see_main_env VENV
    # Written at every call, not at the build: the environment outlives the checkout that built
    # it, and another clone (CI's, a second worktree) has its main environment elsewhere.
    local site
    site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; list(map(site.addsitedir, $site_dirs))" > "$site/corral-main-env.pth"
}

# Every site directory of the main environment, added after the matrix venv's own (whose torch
# therefore wins); addsitedir also runs their .pth files (corral's editable install).
site_dirs=
$build_only || site_dirs=$("$PY" -c 'import site, sys
print(repr([p for p in sys.path if p.endswith("-packages")]))')
for release in $releases; do
    venv=$root/torch-$release-py$pyver
    [ -f "$venv/.corral-built" ] || build "$venv" "$release"
    $build_only && continue
    see_main_env "$venv"
    if $sizes; then
        echo "torch $release: $(du -sh "$venv" | cut -f1), built in $(cat "$venv/.corral-built") s" >&2
    fi
    echo "$venv/bin/python"
done
