"""Rules for a guest's disks that every compute backend applies the same way (pure functions).

A DiskAttachment's `id` becomes a QEMU device id and (shortened when long) its block node names,
so it follows Corral's name rule (lowercase letters, digits, '-'); ids Corral uses for its own
devices are reserved. Its `serial` is what the guest reads in /sys/block/vdX/serial and
/dev/disk/by-id/virtio-<serial>: virtio-blk carries at most 20 bytes, so a longer one is refused
rather than cut silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from corral.errors import InvalidInput
from corral.model.names import name_problem
from corral.model.rpc import DiskAttachment

# VIRTIO_BLK_ID_BYTES: the guest sees no more of the serial than this.
MAX_SERIAL_BYTES = 20
DISK_FORMATS = ("qcow2", "raw")
# Device ids of Corral's own devices (the guest agent's virtio-serial port and controller).
RESERVED_DISK_IDS = frozenset({"qga0", "vser0"})
# The NoCloud seed's device: an id no DiskAttachment can have (the name rule forbids '_').
SEED_DISK_ID = "corral_seed"
SEED_SERIAL = "cidata"
# Characters udev keeps as they are in /dev/disk/by-id names.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_MICROVM = "microvm"


def check_disk_id(disk_id: str, field: str = "disk_id") -> None:
    """Refuse an id that cannot name a QEMU device and block node, or that Corral uses."""
    problem = name_problem(disk_id)
    if problem is not None:
        shown = repr(disk_id) if len(disk_id) <= 80 else repr(disk_id[:80] + "...")
        raise InvalidInput(f"disk id {shown} {problem}", code="invalid_name", field=field)
    if disk_id in RESERVED_DISK_IDS:
        raise InvalidInput(
            f"disk id {disk_id!r} is reserved for a device Corral adds itself; choose another",
            code="invalid_name",
            field=field,
        )


def check_disk(disk: DiskAttachment, field: str = "disk") -> None:
    """Refuse a disk whose id, serial, format or path the guest could not be given as is."""
    check_disk_id(disk.id, f"{field}.id")
    serial_bytes = len(disk.serial.encode())
    if not _SERIAL_RE.match(disk.serial):
        raise InvalidInput(
            f"serial {disk.serial!r} of disk {disk.id!r} may use only letters, digits, "
            "'.', '_' and '-' (it becomes a /dev/disk/by-id name in the guest)",
            field=f"{field}.serial",
        )
    if serial_bytes > MAX_SERIAL_BYTES:
        raise InvalidInput(
            f"serial {disk.serial!r} of disk {disk.id!r} is {serial_bytes} bytes; virtio-blk "
            f"shows the guest at most {MAX_SERIAL_BYTES}",
            field=f"{field}.serial",
        )
    if disk.format not in DISK_FORMATS:
        raise InvalidInput(
            f"disk {disk.id!r} has format {disk.format!r}; use one of {', '.join(DISK_FORMATS)}",
            field=f"{field}.format",
        )
    if not disk.path.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in disk.path):
        raise InvalidInput(
            f"disk {disk.id!r} has path {disk.path!r}; it must be an absolute host path "
            "without control characters",
            field=f"{field}.path",
        )


def check_launch_disks(disks: Sequence[DiskAttachment]) -> None:
    """Check every disk of a launch, and that no two share an id or a serial."""
    ids: set[str] = set()
    serials: set[str] = set()
    for index, disk in enumerate(disks):
        field = f"disks[{index}]"
        check_disk(disk, field)
        if disk.id in ids:
            raise InvalidInput(f"two disks have the id {disk.id!r}", field=f"{field}.id")
        if disk.serial in serials or disk.serial == SEED_SERIAL:
            raise InvalidInput(
                f"disk {disk.id!r} repeats the serial {disk.serial!r}; serials name the disks "
                f"in the guest, so each must be unique (and {SEED_SERIAL!r} is the seed's)",
                field=f"{field}.serial",
            )
        ids.add(disk.id)
        serials.add(disk.serial)


def boot_order(disks: Sequence[DiskAttachment]) -> list[DiskAttachment]:
    """Boot disks first, each group in the order given: the guest names them vda, vdb, ..."""
    return [d for d in disks if d.boot] + [d for d in disks if not d.boot]


def check_grow(disk_id: str, current_bytes: int, size_bytes: int) -> bool:
    """True when `size_bytes` grows the disk, False when it is its size already; a smaller or
    unaligned size is refused (shrinking under a running guest destroys its data)."""
    if size_bytes % 512:
        raise InvalidInput(
            f"new size {size_bytes} of disk {disk_id!r} is not a multiple of 512 bytes",
            field="size_bytes",
        )
    if size_bytes < current_bytes:
        raise InvalidInput(
            f"disk {disk_id!r} is {current_bytes} bytes; it can only grow, not shrink to "
            f"{size_bytes}",
            code="shrink_refused",
            field="size_bytes",
        )
    return size_bytes > current_bytes


def machine_has_hotplug(machine: str) -> bool:
    """pc and q35 hot-plug PCI devices; microvm's virtio-mmio slots are fixed at launch."""
    return machine != _MICROVM
