"""The ``platform`` check: which hosts can train with Linux ranks, and how to fix those that
cannot, before anything starts.

- **macOS**: torch's macOS builds use gloo's ``uv`` transport, its Linux builds gloo's ``tcp``
  transport, and the two cannot form one process group; MPS tensors have no collective backend.
  A Mac is refused as a training host; it can be the console (docs/windows.md, "Macs").
- **Native Windows** (cmd or PowerShell behind the SSH server, or an MSYS/Cygwin shell): its
  torch has gloo only, over a transport that does not talk to Linux ranks, and no NCCL.
  Refused; the same PC trains under WSL2.
- **WSL2** (kernel release ``...microsoft-standard-WSL2``): Linux torch with CUDA through the
  driver libraries in ``/usr/lib/wsl/lib``. Its default NAT networking hides it behind the
  Windows host (refused, with the ``.wslconfig`` fix); mirrored networking gives it the
  host's LAN address (accepted; the Hyper-V firewall still filters inbound traffic, which the
  full-mesh check proves open).

The probe section prints ``uname -s``, ``uname -r``, ``wslinfo --networking-mode`` (newer WSL
releases have it) and whether the WSL driver libraries are there.
"""

from __future__ import annotations

import ipaddress

from remote.events import CheckItem

WSL_LIB = "/usr/lib/wsl/lib"
"""Where WSL2 mounts the Windows NVIDIA driver's Linux libraries (libcuda, libnvidia-ml)."""
WSL_KERNEL_MARK = "microsoft-standard-wsl2"
"""What a WSL2 kernel's release string contains (compared in lower case)."""
WINDOWS_DOC = "docs/windows.md"
WSL_NAT_NET = ipaddress.ip_network("172.16.0.0/12")
"""The private range WSL2's NAT mode gives the VM (when ``wslinfo`` cannot say the mode)."""
HYPERV_WSL_ID = "{40E0AC32-46A5-438A-A0B2-2B479E8F2E90}"
"""The Hyper-V firewall's id of the WSL virtual machines (``Set-NetFirewallHyperVVMSetting``)."""

PLATFORM_PROBE = (f'uname -s; uname -r; (wslinfo --networking-mode 2>/dev/null || echo "-"); '
                  f'[ -d {WSL_LIB} ] && echo wsl-lib || echo no-wsl-lib')
"""The probe's shell: system, kernel release, WSL networking mode ("-": unknown), libraries."""

WINDOWS_SHELL_MARKS = ("is not recognized as an internal or external command",
                       "commandnotfoundexception", "the syntax of the command is incorrect")
"""What cmd.exe or PowerShell answers to the probe's POSIX shell."""

WSL_NAT_FIX = (
    f"in %UserProfile%\\.wslconfig on the Windows PC put `[wsl2]` and `networkingMode=mirrored`, "
    "run `wsl --shutdown` in PowerShell, allow inbound traffic to WSL (PowerShell as admin: "
    f"`Set-NetFirewallHyperVVMSetting -Name '{HYPERV_WSL_ID}' -DefaultInboundAction Allow`), "
    f"set the host's address to the PC's LAN address, then run `corral check` ({WINDOWS_DOC})")


def _item(host: str, ok: bool, detail: str, hint: str = "") -> CheckItem:
    return CheckItem(host=host, name="platform", ok=ok, detail=detail, hint=hint)


def native_windows(output: str) -> bool:
    """True when the probe's output is a Windows shell refusing POSIX commands."""
    lowered = output.lower()
    return any(mark in lowered for mark in WINDOWS_SHELL_MARKS)


def windows_item(host: str) -> CheckItem:
    """A native Windows host, refused in one line."""
    return _item(host, False, "native Windows cannot train with Linux ranks (its torch has "
                 "gloo over a transport Linux gloo cannot talk to, and no NCCL)",
                 f"run corral's host side inside WSL2 on that PC ({WINDOWS_DOC}), or drive "
                 "the cluster from it as the console only")


def wsl_nat(mode: str, address: str | None, ssh_address: str | None) -> bool:
    """Whether a WSL2 host is in NAT mode: as ``wslinfo`` says, else when the address its ranks
    would use is in WSL's NAT range and is not the address corral reaches it at."""
    if mode in ("nat", "mirrored", "virtioproxy", "none"):
        return mode == "nat"
    try:
        private = address is not None and ipaddress.ip_address(address) in WSL_NAT_NET
    except ValueError:
        return False
    return private and address != ssh_address


def judge_platform(host: str, text: str, *, address: str | None,
                   ssh_address: str | None) -> CheckItem:
    """The host's ``platform`` item from ``PLATFORM_PROBE``'s output."""
    lines = [line.strip() for line in text.splitlines()] + ["", "", "", ""]
    system, release, mode, lib = lines[0], lines[1], lines[2].lower(), lines[3]
    if native_windows(text) or system.upper().startswith(("MINGW", "MSYS", "CYGWIN",
                                                          "WINDOWS")):
        return windows_item(host)
    if system == "Darwin":
        return _item(host, False, "macOS cannot train with Linux ranks (its torch's gloo "
                     "transport cannot join theirs, and MPS has no collective backend)",
                     "take it out of [[hosts]]: a Mac can run corral itself (the console "
                     "that drives the Linux hosts), not ranks")
    if system != "Linux":
        return _item(host, True, f"warning: {system or 'an unknown system'} "
                     f"{release}".rstrip(), "corral's hosts are tested on Linux")
    if WSL_KERNEL_MARK not in release.lower():
        return _item(host, True, f"Linux {release}")
    gpu = (f"GPU driver libraries in {WSL_LIB}" if lib == "wsl-lib"
           else f"no {WSL_LIB}: no GPU for torch (install the Windows NVIDIA driver)")
    if wsl_nat(mode, address, ssh_address):
        return _item(host, False, f"WSL2 in NAT mode: the other hosts cannot reach its ranks at "
                     f"{address or 'its private address'}; {gpu}", WSL_NAT_FIX)
    shown = mode if mode != "-" else "not NAT"
    return _item(host, True, f"WSL2 ({shown} networking); {gpu}")
