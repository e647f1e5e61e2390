"""The accelerator choice: KVM only with a hardware KVM module and a /dev/kvm that opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.compute.qemu.accel import choose_accel, kvm_device_opens, loaded_kvm_modules


@pytest.mark.parametrize(
    ("modules", "opens", "present", "accel", "reason_mentions"),
    [
        ({"kvm", "kvm_intel"}, True, True, "kvm", "kvm_intel is loaded and /dev/kvm opens"),
        ({"kvm", "kvm_amd"}, True, True, "kvm", "kvm_amd is loaded"),
        ({"kvm", "kvm_pvm"}, True, True, "tcg", "only kvm_pvm is loaded"),
        ({"kvm", "kvm_pvm"}, True, True, "tcg", "its guests hang"),
        ({"kvm", "kvm_intel"}, False, True, "tcg", "does not open"),
        ({"kvm", "kvm_intel"}, False, False, "tcg", "/dev/kvm is missing"),
        ({"kvm"}, True, True, "tcg", "neither kvm_intel nor kvm_amd is loaded (found kvm)"),
        (set(), False, True, "tcg", "found no kvm module"),
        (set(), False, False, "tcg", "no KVM module is loaded and /dev/kvm is missing"),
        # A hardware module wins over kvm_pvm being loaded as well.
        ({"kvm", "kvm_pvm", "kvm_amd"}, True, True, "kvm", "kvm_amd"),
    ],
)
def test_choose_accel_names_what_it_found(
    modules: set[str], opens: bool, present: bool, accel: str, reason_mentions: str
) -> None:
    info = choose_accel(modules, kvm_opens=opens, kvm_present=present)
    assert info.accel == accel
    assert reason_mentions in info.reason
    if accel == "tcg":
        assert "TCG" in info.reason


def test_loaded_kvm_modules_reads_sys_module_dirs(tmp_path: Path) -> None:
    for name in ("kvm", "kvm_pvm", "ext4", "virtio"):
        (tmp_path / name).mkdir()
    assert loaded_kvm_modules(tmp_path) == {"kvm", "kvm_pvm"}
    assert loaded_kvm_modules(tmp_path / "missing") == set()


def test_kvm_device_opens_is_false_for_a_missing_device(tmp_path: Path) -> None:
    assert kvm_device_opens(tmp_path / "kvm") is False
