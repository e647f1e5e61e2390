"""The QEMU command line: a pure function of the request, the guest's paths and the accel."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.compute.qemu.cmdline import (
    build_argv,
    kernel_cmdline,
    machine_is_supported,
    parse_tsc_khz,
)
from corral.agent.compute.qemu.runtime import RuntimePaths
from corral.errors import InvalidInput
from corral.model.rpc import LaunchRequest

UID = "6f1c2a8e-3d4b-4c5a-9e7f-0a1b2c3d4e5f"
PATHS = RuntimePaths(Path("/run/corral/web1"))


def request(**overrides: object) -> LaunchRequest:
    fields: dict[str, object] = {
        "name": "web1",
        "uid": UID,
        "cpus": 2,
        "memory_mib": 256,
        "machine": "pc",
        "kernel": "/img/vmlinux",
        "initrd": "/img/initrd.cpio.zst",
        "cmdline": "quiet panic=-1",
    }
    fields.update(overrides)
    return LaunchRequest.model_validate(fields)


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`."""
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_pc_argv_is_exactly_this() -> None:
    argv = build_argv(request(), PATHS, "tcg", "qemu-system-x86_64")
    assert argv == [
        "qemu-system-x86_64",
        "-name", "guest=web1,debug-threads=on",
        "-uuid", UID,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-machine", "pc,accel=tcg",
        "-cpu", "max",
        "-smp", "2",
        "-m", "256",
        "-action", "reboot=reset,shutdown=poweroff",
        "-kernel", "/img/vmlinux",
        "-initrd", "/img/initrd.cpio.zst",
        "-append", "console=ttyS0 quiet panic=-1 corral.hostname=web1",
        "-chardev",
        "socket,id=charconsole,path=/run/corral/web1/console.sock,server=on,wait=off,"
        "logfile=/run/corral/web1/console.log,logappend=on",
        "-serial", "chardev:charconsole",
        "-chardev", "socket,id=charmonitor,path=/run/corral/web1/qmp.sock,server=on,wait=off",
        "-mon", "chardev=charmonitor,mode=control",
        "-chardev", "socket,id=charqga,path=/run/corral/web1/qga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0",
        "-device", "virtserialport,bus=vser0.0,chardev=charqga,name=org.qemu.guest_agent.0,id=qga0",
        "-pidfile", "/run/corral/web1/qemu.pid",
        "-daemonize",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("machine", "accel", "machine_opt", "cpu", "serial_device"),
    [
        ("pc", "tcg", "pc,accel=tcg", "max", "virtio-serial-pci,id=vser0"),
        ("pc", "kvm", "pc,accel=kvm", "host", "virtio-serial-pci,id=vser0"),
        ("q35", "tcg", "q35,accel=tcg", "max", "virtio-serial-pci,id=vser0"),
        ("q35", "kvm", "q35,accel=kvm", "host", "virtio-serial-pci,id=vser0"),
        ("pc-i440fx-7.2", "tcg", "pc-i440fx-7.2,accel=tcg", "max", "virtio-serial-pci,id=vser0"),
        ("microvm", "tcg", "microvm,accel=tcg,acpi=on", "max", "virtio-serial-device,id=vser0"),
        ("microvm", "kvm", "microvm,accel=kvm,acpi=on", "host", "virtio-serial-device,id=vser0"),
    ],
)
def test_machine_and_accel_choose_machine_cpu_and_bus(
    machine: str, accel: str, machine_opt: str, cpu: str, serial_device: str
) -> None:
    argv = build_argv(request(machine=machine), PATHS, accel, "qemu", tsc_khz=2_600_000)
    assert option(argv, "-machine") == [machine_opt]
    assert option(argv, "-cpu") == [cpu]
    assert option(argv, "-device")[0] == serial_device


def test_microvm_gets_the_host_tsc_frequency_and_pc_does_not() -> None:
    microvm = build_argv(request(machine="microvm"), PATHS, "tcg", "qemu", tsc_khz=2_600_000)
    pc = build_argv(request(machine="pc"), PATHS, "tcg", "qemu", tsc_khz=2_600_000)
    assert "tsc_early_khz=2600000" in option(microvm, "-append")[0].split()
    assert "tsc_early_khz" not in option(pc, "-append")[0]


def test_kernel_cmdline_puts_console_first_and_hostname_last() -> None:
    words = kernel_cmdline(request(cmdline="  quiet   panic=-1 "), None).split()
    assert words == ["console=ttyS0", "quiet", "panic=-1", "corral.hostname=web1"]


def test_no_initrd_means_no_initrd_option() -> None:
    argv = build_argv(request(initrd=None), PATHS, "tcg", "qemu")
    assert "-initrd" not in argv


def test_guest_is_detached_and_never_reads_user_config() -> None:
    argv = build_argv(request(), PATHS, "tcg", "qemu")
    assert argv[-1] == "-daemonize"
    assert "-no-user-config" in argv and "-nodefaults" in argv
    # A guest reboot resets the machine and keeps QEMU running; a power-off ends it.
    assert option(argv, "-action") == ["reboot=reset,shutdown=poweroff"]
    assert "-no-reboot" not in argv and "-no-shutdown" not in argv
    assert "-sandbox" not in argv


def test_commas_in_runtime_paths_are_escaped_for_qemu_options() -> None:
    argv = build_argv(request(), RuntimePaths(Path("/run/a,b/web1")), "tcg", "qemu")
    assert "path=/run/a,,b/web1/qmp.sock" in " ".join(argv)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"machine": "isapc"}, "machine"),
        ({"machine": "virt"}, "machine"),
        ({"uid": "not-a-uuid"}, "uid"),
        ({"cpus": 0}, "cpus"),
        ({"memory_mib": 0}, "memory"),
    ],
)
def test_invalid_requests_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        build_argv(request(**overrides), PATHS, "tcg", "qemu")
    assert caught.value.field == field


def test_unknown_accel_is_refused() -> None:
    with pytest.raises(InvalidInput):
        build_argv(request(), PATHS, "hvf", "qemu")


@pytest.mark.parametrize(
    ("machine", "supported"),
    [("pc", True), ("q35", True), ("microvm", True), ("pc-q35-7.2", True), ("none", False)],
)
def test_machine_is_supported(machine: str, supported: bool) -> None:
    assert machine_is_supported(machine) is supported


@pytest.mark.parametrize(
    ("cpuinfo", "khz"),
    [
        ("processor\t: 0\ncpu MHz\t\t: 2600.000\ncache size\t: 1 KB\n", 2_600_000),
        ("cpu MHz : 2095.078\ncpu MHz : 1200.000\n", 2_095_078),
        ("processor : 0\n", None),
        ("cpu MHz : fast\n", None),
    ],
)
def test_parse_tsc_khz(cpuinfo: str, khz: int | None) -> None:
    assert parse_tsc_khz(cpuinfo) == khz
