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
from corral.model.rpc import CloudInitSeed, DiskAttachment, LaunchRequest

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


def disk(disk_id: str, path: str, **overrides: object) -> DiskAttachment:
    fields: dict[str, object] = {"id": disk_id, "path": path, "serial": f"s-{disk_id}"}
    fields.update(overrides)
    return DiskAttachment.model_validate(fields)


def after_guest_agent(argv: list[str]) -> list[str]:
    """The words between the guest agent's port and -pidfile: disks, seed, hot-plug ports."""
    start = next(i for i, word in enumerate(argv) if word.startswith("virtserialport,"))
    return argv[start + 1 : argv.index("-pidfile")]


def test_pc_disks_are_two_block_nodes_and_a_virtio_blk_each_boot_disk_first() -> None:
    disks = [
        disk("data", "/pool/data.qcow2"),
        disk("root", "/pool/root.qcow2", boot=True),
        disk("iso", "/pool/install.raw", format="raw", read_only=True),
    ]
    argv = build_argv(request(disks=disks), PATHS, "tcg", "qemu")
    assert after_guest_agent(argv) == [
        "-blockdev", "driver=file,node-name=root-file,filename=/pool/root.qcow2,discard=unmap",
        "-blockdev", "driver=qcow2,node-name=root,file=root-file,discard=unmap",
        "-device", "virtio-blk-pci,drive=root,id=root,serial=s-root",
        "-blockdev", "driver=file,node-name=data-file,filename=/pool/data.qcow2,discard=unmap",
        "-blockdev", "driver=qcow2,node-name=data,file=data-file,discard=unmap",
        "-device", "virtio-blk-pci,drive=data,id=data,serial=s-data",
        "-blockdev",
        "driver=file,node-name=iso-file,filename=/pool/install.raw,read-only=on,discard=unmap",
        "-blockdev", "driver=raw,node-name=iso,file=iso-file,read-only=on,discard=unmap",
        "-device", "virtio-blk-pci,drive=iso,id=iso,serial=s-iso",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("machine", "ports", "device"),
    [
        ("pc", 0, "virtio-blk-pci,drive=d1,id=d1,serial=s-d1"),
        ("microvm", 0, "virtio-blk-device,drive=d1,id=d1,serial=s-d1"),
        ("q35", 5, "virtio-blk-pci,drive=d1,id=d1,serial=s-d1,bus=corral_port0"),
    ],
)
def test_q35_gets_a_root_port_per_disk_plus_four_spare_for_hot_plug(
    machine: str, ports: int, device: str
) -> None:
    argv = build_argv(request(machine=machine, disks=[disk("d1", "/p/d1")]), PATHS, "tcg", "qemu")
    words = after_guest_agent(argv)
    assert [w for w in words if w.startswith("pcie-root-port")] == [
        f"pcie-root-port,id=corral_port{i},chassis={i + 1}" for i in range(ports)
    ]
    assert [w for w in words if "drive=d1" in w] == [device]


def test_q35_without_disks_still_has_ports_for_hot_plug() -> None:
    argv = build_argv(request(machine="q35"), PATHS, "tcg", "qemu")
    assert sum(w.startswith("pcie-root-port") for w in argv) == 4


def test_cloud_init_seed_is_a_read_only_raw_disk_after_the_others() -> None:
    seed = CloudInitSeed(instance_id="i-1", hostname="web1")
    argv = build_argv(
        request(disks=[disk("root", "/p/root", boot=True)], cloud_init=seed), PATHS, "tcg", "qemu"
    )
    assert after_guest_agent(argv)[-6:] == [
        "-blockdev",
        "driver=file,node-name=corral_seed-file,filename=/run/corral/web1/seed.img,"
        "read-only=on,discard=unmap",
        "-blockdev",
        "driver=raw,node-name=corral_seed,file=corral_seed-file,read-only=on,discard=unmap",
        "-device",
        "virtio-blk-pci,drive=corral_seed,id=corral_seed,serial=cidata",
    ]
    assert "seed.img" not in " ".join(build_argv(request(), PATHS, "tcg", "qemu"))


def test_commas_in_disk_paths_are_escaped() -> None:
    argv = build_argv(request(disks=[disk("d1", "/pool/a,b.qcow2")]), PATHS, "tcg", "qemu")
    assert "filename=/pool/a,,b.qcow2" in " ".join(argv)


@pytest.mark.parametrize(
    ("disks", "field"),
    [
        ([disk("Root", "/p/r")], "disks[0].id"),
        ([disk("d1", "/p/a"), disk("d1", "/p/b")], "disks[1].id"),
        ([disk("d1", "/p/a"), disk("d2", "/p/b", serial="s-d1")], "disks[1].serial"),
        ([disk("d1", "/p/a", serial="cidata")], "disks[0].serial"),
        ([disk("d1", "/p/a", format="vmdk")], "disks[0].format"),
    ],
    ids=["id", "duplicate-id", "duplicate-serial", "seed-serial", "format"],
)
def test_invalid_disks_name_the_field(disks: list[DiskAttachment], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        build_argv(request(disks=disks), PATHS, "tcg", "qemu")
    assert caught.value.field == field
