"""A guest's disks as QEMU sees them: block nodes, virtio-blk devices, hot-plug ports (pure).

One description serves the command line (`-blockdev`/`-device`) and QMP hot-plug
(`blockdev-add`/`device_add`), so a disk given at launch and one plugged later are the same to
QEMU: the same node names, the same options, the same device.

Decisions taken here (and why):
- Two nodes per disk, a `file` node (the host file: locking, discard) and a format node on top
  (qcow2/raw) named from the disk id; the device's `drive` is the format node. blockdev-add
  adds them one at a time, so a failed second step is undone by deleting the first.
- Node names must be shorter than 32 bytes: a disk id longer than 25 is shortened to 17
  characters plus 8 hex of its SHA-256 (exactly 26, so never equal to a short id's node), and
  the longest node name, "<26>-file", has 31.
- `discard=unmap`: the guest's TRIM/discard frees space in thin qcow2 files. Host cache and aio
  stay QEMU's defaults (cache.direct=off, threads).
- pc (i440fx): devices are hot-plugged on the root bus `pci.0` (ACPI PCI hot-plug of PIIX4).
- q35: the PCIe root bus does not hot-plug, so every disk sits behind its own `pcie-root-port`:
  one port per launch disk (so it can be unplugged later) plus HOTPLUG_PORTS empty ones for
  disks attached while the guest runs. QEMU 7.2 drives these ports with ACPI hot-plug (no 5 s
  PCIe attention-button delay). More spare ports need a relaunch, which re-counts them.
- microvm: virtio-mmio slots are fixed at launch; no hot-plug (see machine_has_hotplug).
- The cloud-init seed is a read-only raw disk with serial `cidata`, added after every other
  disk (so it never takes vda), never reported as one of the guest's disks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.agent.compute.disks import SEED_DISK_ID, SEED_SERIAL, boot_order
from corral.model.rpc import DiskAttachment

HOTPLUG_PORTS = 4
PORT_ID_PREFIX = "corral_port"
MICROVM = "microvm"
_Q35 = re.compile(r"^(q35|pc-q35-[0-9.]+)$")
_SHORT_ID_MAX = 25
_PERIPHERAL = "/machine/peripheral/"

Options = dict[str, object]


def is_q35(machine: str) -> bool:
    """True for q35 machine types (PCIe: hot-plug needs root ports)."""
    return bool(_Q35.match(machine))


def node_names(disk_id: str) -> tuple[str, str]:
    """(format node, file node) of a disk; both fit QEMU's 31-byte node names."""
    base = disk_id
    if len(disk_id) > _SHORT_ID_MAX:
        digest = hashlib.sha256(disk_id.encode()).hexdigest()[:8]
        base = f"{disk_id[:17]}-{digest}"
    return base, f"{base}-file"


def block_nodes(
    disk_id: str, path: str | Path, disk_format: str, read_only: bool
) -> tuple[Options, Options]:
    """The blockdev-add arguments of a disk: (file node, format node on top of it)."""
    format_node, file_node = node_names(disk_id)
    file_options: Options = {"driver": "file", "node-name": file_node, "filename": str(path)}
    format_options: Options = {"driver": disk_format, "node-name": format_node, "file": file_node}
    for options in (file_options, format_options):
        if read_only:
            options["read-only"] = True
        options["discard"] = "unmap"
    return file_options, format_options


def disk_block_nodes(disk: DiskAttachment) -> tuple[Options, Options]:
    """block_nodes() of a DiskAttachment."""
    return block_nodes(disk.id, disk.path, disk.format, disk.read_only)


def seed_block_nodes(seed_image: Path) -> tuple[Options, Options]:
    """block_nodes() of the cloud-init seed (raw, read-only)."""
    return block_nodes(SEED_DISK_ID, seed_image, "raw", read_only=True)


def device_options(disk_id: str, serial: str, machine: str, bus: str | None = None) -> Options:
    """The device_add arguments of a disk's virtio-blk device (on `bus` when given)."""
    driver = "virtio-blk-device" if machine == MICROVM else "virtio-blk-pci"
    options: Options = {"driver": driver, "drive": node_names(disk_id)[0], "id": disk_id}
    options["serial"] = serial
    if bus is not None:
        options["bus"] = bus
    return options


def port_ids(count: int) -> list[str]:
    """Ids of the first `count` pcie-root-ports Corral adds to a q35 guest."""
    return [f"{PORT_ID_PREFIX}{index}" for index in range(count)]


def render_option(options: Mapping[str, object], head: str | None = None) -> str:
    """`key=value,...` for -blockdev/-device (a comma in a value is doubled; True -> on)."""
    words = [head] if head is not None else []
    for key, value in options.items():
        if isinstance(value, bool):
            text = "on" if value else "off"
        else:
            text = str(value).replace(",", ",,")
        words.append(f"{key}={text}")
    return ",".join(words)


def disks_argv(disks: Sequence[DiskAttachment], seed_image: Path | None, machine: str) -> list[str]:
    """The command line words that give a guest its disks, seed and hot-plug ports."""
    ordered = boot_order(disks)
    argv: list[str] = []
    ports: list[str | None] = [None] * len(ordered)
    if is_q35(machine):
        ids = port_ids(len(ordered) + HOTPLUG_PORTS)
        for chassis, port_id in enumerate(ids, start=1):
            argv += ["-device", f"pcie-root-port,id={port_id},chassis={chassis}"]
        ports = list(ids[: len(ordered)])
    for disk, port in zip(ordered, ports, strict=True):
        argv += _one_disk(
            disk_block_nodes(disk), device_options(disk.id, disk.serial, machine, port)
        )
    if seed_image is not None:
        argv += _one_disk(
            seed_block_nodes(seed_image), device_options(SEED_DISK_ID, SEED_SERIAL, machine)
        )
    return argv


def _one_disk(nodes: Iterable[Options], device: Options) -> list[str]:
    argv: list[str] = []
    for node in nodes:
        argv += ["-blockdev", render_option(node)]
    driver = str(device["driver"])
    argv += ["-device", render_option({k: v for k, v in device.items() if k != "driver"}, driver)]
    return argv


@dataclass(frozen=True)
class AttachedDisk:
    """A disk device QEMU has now, from query-block."""

    id: str
    node: str
    path: str
    read_only: bool
    size_bytes: int


def attached_disks(query_block: object) -> list[AttachedDisk]:
    """The guest's disk devices in QEMU's order (launch order, then attach order), from the
    answer of query-block; the cloud-init seed is not one of them."""
    found: list[AttachedDisk] = []
    for entry in query_block if isinstance(query_block, list) else []:
        if not isinstance(entry, Mapping):
            continue
        qdev, inserted = entry.get("qdev"), entry.get("inserted")
        if not isinstance(qdev, str) or not qdev.startswith(_PERIPHERAL):
            continue
        if not isinstance(inserted, Mapping):
            continue
        # virtio-blk-pci answers with its inner ".../<id>/virtio-backend"; virtio-blk-device
        # with "/machine/peripheral/<id>".
        device_id = qdev[len(_PERIPHERAL) :].split("/", 1)[0]
        if device_id == SEED_DISK_ID:
            continue
        image = inserted.get("image")
        size = image.get("virtual-size") if isinstance(image, Mapping) else None
        found.append(
            AttachedDisk(
                id=device_id,
                node=str(inserted.get("node-name", "")),
                path=str(inserted.get("file", "")),
                read_only=bool(inserted.get("ro", False)),
                size_bytes=size if isinstance(size, int) else 0,
            )
        )
    return found


def named_nodes(query_named_block_nodes: object) -> set[str]:
    """Node names in the answer of query-named-block-nodes."""
    names: set[str] = set()
    for entry in query_named_block_nodes if isinstance(query_named_block_nodes, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("node-name"), str):
            names.add(entry["node-name"])
    return names


def free_port(query_pci: object) -> str | None:
    """The first of Corral's q35 root ports with nothing plugged in, from query-pci."""
    empty: list[str] = []
    for bus in query_pci if isinstance(query_pci, list) else []:
        devices = bus.get("devices") if isinstance(bus, Mapping) else None
        for device in devices if isinstance(devices, list) else []:
            if not isinstance(device, Mapping):
                continue
            qdev_id = device.get("qdev_id")
            bridge = device.get("pci_bridge")
            if not isinstance(qdev_id, str) or not qdev_id.startswith(PORT_ID_PREFIX):
                continue
            if isinstance(bridge, Mapping) and not bridge.get("devices"):
                empty.append(qdev_id)
    empty.sort(key=lambda port: int(port[len(PORT_ID_PREFIX) :] or 0))
    return empty[0] if empty else None
