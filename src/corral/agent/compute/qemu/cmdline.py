"""The QEMU command line of a guest: a pure function of the request, its paths and the accel.

Decisions taken here (and why):
- `-nodefaults -no-user-config`: only the devices we ask for, whatever /etc/qemu says.
- Sockets are chardev unix *servers* with `wait=off`: QEMU starts without anyone attached, and a
  new agent process can attach later (re-attach). Each accepts one client at a time.
- The console chardev keeps a `logfile` (appended across reboots), so output is kept even when
  nobody is attached.
- `-action reboot=reset,shutdown=poweroff` (QEMU's defaults, spelled out): a reboot from inside
  the guest resets the machine and the VM keeps running (QMP RESET, state stays RUNNING); a
  power-off from inside the guest ends the QEMU process (SHUTDOWN, then the process exits).
- `-daemonize`: QEMU detaches itself (it survives the agent), and its parent exits only after
  initialisation, so a launch error arrives synchronously on stderr with a non-zero status.
- microvm gets virtio-mmio devices, ACPI on (so system_powerdown works) and `tsc_early_khz`
  (without it the guest can hang calibrating the TSC); pc/q35 get PCI devices.
- Disks, the cloud-init seed and q35's hot-plug ports come from blockdev.py, which QMP
  hot-plug uses too; they follow the guest agent's devices, boot disks first.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from corral.agent.compute.disks import check_launch_disks
from corral.agent.compute.qemu.blockdev import disks_argv
from corral.agent.compute.qemu.runtime import RuntimePaths
from corral.errors import InvalidInput
from corral.model.rpc import LaunchRequest

GUEST_AGENT_PORT = "org.qemu.guest_agent.0"
# QMP device id of the guest agent's virtserialport (VSERPORT_CHANGE carries it).
GUEST_AGENT_DEVICE_ID = "qga0"
MICROVM = "microvm"
_PCI_MACHINE = re.compile(r"^(pc|q35|pc-i440fx-[0-9.]+|pc-q35-[0-9.]+)$")


def machine_is_supported(machine: str) -> bool:
    """True for the machine types this builder knows how to populate."""
    return machine == MICROVM or bool(_PCI_MACHINE.match(machine))


def _escape(value: str | Path) -> str:
    """Escape a value inside a QEMU `key=value,...` option (a comma is written twice)."""
    return str(value).replace(",", ",,")


def kernel_cmdline(req: LaunchRequest, tsc_khz: int | None) -> str:
    """The guest kernel command line: console first, the image's words, then Corral's."""
    words = ["console=ttyS0"]
    if req.machine == MICROVM and tsc_khz:
        words.append(f"tsc_early_khz={tsc_khz}")
    words.extend(req.cmdline.split())
    words.append(f"corral.hostname={req.name}")
    return " ".join(words)


def build_argv(
    req: LaunchRequest,
    paths: RuntimePaths,
    accel: str,
    qemu_binary: str,
    *,
    tsc_khz: int | None = None,
) -> list[str]:
    """The full argv that starts guest `req` detached; `tsc_khz` is the host TSC (microvm)."""
    if not machine_is_supported(req.machine):
        raise InvalidInput(
            f"machine type {req.machine!r} is not supported; use pc, q35 or microvm",
            code="unsupported_machine",
            field="machine",
        )
    if accel not in ("kvm", "tcg"):
        raise InvalidInput(f"accel {accel!r} is not kvm or tcg", field="accel")
    try:
        guest_uuid = str(uuid.UUID(req.uid))
    except ValueError as err:
        raise InvalidInput(f"uid {req.uid!r} is not a UUID", field="uid") from err
    if req.cpus < 1:
        raise InvalidInput(f"cpus must be at least 1, not {req.cpus}", field="cpus")
    if req.memory_mib < 1:
        raise InvalidInput(f"memory must be at least 1 MiB, not {req.memory_mib}", field="memory")
    check_launch_disks(req.disks)

    microvm = req.machine == MICROVM
    machine = f"{req.machine},accel={accel}"
    if microvm:
        machine += ",acpi=on"
    argv = [
        qemu_binary,
        "-name", f"guest={req.name},debug-threads=on",
        "-uuid", guest_uuid,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-machine", machine,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(req.cpus),
        "-m", str(req.memory_mib),
        "-action", "reboot=reset,shutdown=poweroff",
        "-kernel", req.kernel,
    ]  # fmt: skip
    if req.initrd:
        argv += ["-initrd", req.initrd]
    argv += ["-append", kernel_cmdline(req, tsc_khz)]
    argv += [
        "-chardev",
        f"socket,id=charconsole,path={_escape(paths.console_socket)},server=on,wait=off,"
        f"logfile={_escape(paths.console_log)},logappend=on",
        "-serial", "chardev:charconsole",
        "-chardev", f"socket,id=charmonitor,path={_escape(paths.qmp_socket)},server=on,wait=off",
        "-mon", "chardev=charmonitor,mode=control",
        "-chardev", f"socket,id=charqga,path={_escape(paths.qga_socket)},server=on,wait=off",
        "-device", "virtio-serial-device,id=vser0" if microvm else "virtio-serial-pci,id=vser0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=charqga,name={GUEST_AGENT_PORT},"
        f"id={GUEST_AGENT_DEVICE_ID}",
    ]  # fmt: skip
    seed_image = paths.seed_image if req.cloud_init is not None else None
    argv += disks_argv(req.disks, seed_image, req.machine)
    argv += [
        "-pidfile", str(paths.pidfile),
        "-daemonize",
    ]  # fmt: skip
    return argv


def parse_tsc_khz(cpuinfo: str) -> int | None:
    """The TSC frequency in kHz from /proc/cpuinfo's first "cpu MHz" line (None if absent)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return round(float(value.strip()) * 1000)
            except ValueError:
                return None
    return None


def host_tsc_khz() -> int | None:
    """The host's TSC frequency in kHz: sysfs when the kernel exports it, else /proc/cpuinfo."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz").read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        return parse_tsc_khz(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None
