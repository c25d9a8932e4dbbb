"""The ``platform`` check on the facts a host's probe prints: macOS and native Windows refused
in one line with what works instead, WSL2 recognised, its NAT mode refused with the exact fix,
its mirrored mode and its GPU driver path accepted."""

from __future__ import annotations

from remote.api import CheckItem
from remote.checks.platform_check import HYPERV_WSL_ID, judge_platform, native_windows

WSL_RELEASE = "5.15.153.1-microsoft-standard-WSL2"


def judge(text: str, address: str | None = "192.168.1.20",
          ssh_address: str | None = "192.168.1.20") -> CheckItem:
    return judge_platform("pc", text, address=address, ssh_address=ssh_address)


def test_a_linux_host_passes_with_its_kernel() -> None:
    item = judge("Linux\n6.8.0-45-generic\n-\nno-wsl-lib\n")
    assert item.ok and item.detail == "Linux 6.8.0-45-generic"


def test_a_mac_is_refused_in_one_line_with_what_works_instead() -> None:
    item = judge("Darwin\n23.4.0\n-\nno-wsl-lib\n")
    assert not item.ok and "\n" not in item.detail + item.hint
    assert item.detail.startswith("macOS cannot train with Linux ranks")
    assert "a Mac can run corral itself" in item.hint


def test_native_windows_is_refused_whatever_shell_answers() -> None:
    cmd = "'uname' is not recognized as an internal or external command,\r\noperable program"
    assert native_windows(cmd)
    for text in (cmd, "MINGW64_NT-10.0-22631\n3.4.10\n-\nno-wsl-lib\n"):
        item = judge(text)
        assert not item.ok and item.detail.startswith("native Windows cannot train")
        assert "WSL2" in item.hint and "docs/windows.md" in item.hint


def test_wsl2_in_nat_mode_is_refused_with_the_exact_fix() -> None:
    item = judge(f"Linux\n{WSL_RELEASE}\nnat\nwsl-lib\n", address="172.24.80.2")
    assert not item.ok
    assert item.detail.startswith("WSL2 in NAT mode: the other hosts cannot reach its ranks at "
                                  "172.24.80.2")
    assert "GPU driver libraries in /usr/lib/wsl/lib" in item.detail
    for words in ("[wsl2]", "networkingMode=mirrored", "wsl --shutdown", HYPERV_WSL_ID,
                  "corral check"):
        assert words in item.hint


def test_wsl2_without_wslinfo_reads_nat_from_its_address() -> None:
    old = f"Linux\n{WSL_RELEASE}\n-\nwsl-lib\n"
    assert not judge(old, address="172.24.80.2", ssh_address="192.168.1.20").ok
    mirrored = judge(old, address="192.168.1.20", ssh_address="192.168.1.20")
    assert mirrored.ok and mirrored.detail.startswith("WSL2 (not NAT networking)")


def test_wsl2_in_mirrored_mode_passes_and_names_its_gpu_path() -> None:
    item = judge(f"Linux\n{WSL_RELEASE}\nmirrored\nwsl-lib\n")
    assert item.ok
    assert item.detail == "WSL2 (mirrored networking); GPU driver libraries in /usr/lib/wsl/lib"
    bare = judge(f"Linux\n{WSL_RELEASE}\nmirrored\nno-wsl-lib\n")
    assert bare.ok and "no /usr/lib/wsl/lib" in bare.detail
