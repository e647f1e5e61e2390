"""Which accelerator QEMU guests get on this host: KVM only when a real KVM module backs /dev/kvm.

/dev/kvm alone proves nothing: on some hosts it is served by kvm_pvm, under which ordinary guest
kernels hang. So KVM is chosen only when kvm_intel or kvm_amd is loaded AND /dev/kvm opens;
everything else is TCG, with a reason that names what was found.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from corral.agent.compute.base import AccelInfo

log = logging.getLogger(__name__)

HARDWARE_KVM_MODULES = ("kvm_intel", "kvm_amd")
# Modules that create /dev/kvm without running ordinary guests.
_UNUSABLE_KVM_MODULES = {"kvm_pvm": "its guests hang"}
_SYS_MODULE = Path("/sys/module")
_DEV_KVM = Path("/dev/kvm")


def choose_accel(loaded_modules: set[str], kvm_opens: bool, kvm_present: bool) -> AccelInfo:
    """Pick "kvm" or "tcg" from what the probe found; the reason names the evidence."""
    hardware = [m for m in HARDWARE_KVM_MODULES if m in loaded_modules]
    if hardware:
        module = hardware[0]
        if kvm_opens:
            return AccelInfo("kvm", f"{module} is loaded and /dev/kvm opens")
        if not kvm_present:
            return AccelInfo("tcg", f"{module} is loaded but /dev/kvm is missing: using TCG")
        return AccelInfo(
            "tcg", f"{module} is loaded but /dev/kvm does not open (permissions?): using TCG"
        )
    unusable = sorted(m for m in _UNUSABLE_KVM_MODULES if m in loaded_modules)
    if unusable:
        why = "; ".join(_UNUSABLE_KVM_MODULES[m] for m in unusable)
        return AccelInfo("tcg", f"only {', '.join(unusable)} is loaded: {why}, using TCG")
    if kvm_present:
        found = "kvm" if "kvm" in loaded_modules else "no kvm module"
        return AccelInfo(
            "tcg",
            f"/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded (found {found}): "
            "using TCG",
        )
    return AccelInfo("tcg", "no KVM module is loaded and /dev/kvm is missing: using TCG")


def loaded_kvm_modules(sys_module: Path = _SYS_MODULE) -> set[str]:
    """Names of loaded KVM-family modules, read from /sys/module (there may be no lsmod)."""
    try:
        return {entry.name for entry in sys_module.iterdir() if entry.name.startswith("kvm")}
    except OSError:
        return set()


def kvm_device_opens(device: Path = _DEV_KVM) -> bool:
    """True when /dev/kvm can be opened read-write by this process."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@functools.cache
def probe_accel() -> AccelInfo:
    """Probe this host once (cached for the process) and log the choice."""
    info = choose_accel(loaded_kvm_modules(), kvm_device_opens(), _DEV_KVM.exists())
    log.info("QEMU accelerator: %s (%s)", info.accel, info.reason)
    return info
