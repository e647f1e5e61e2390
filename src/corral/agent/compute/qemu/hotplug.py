"""Disks plugged into and out of a running guest through its QMP monitor.

QEMU is the record: which disks a guest has is read back from query-block (so a re-attached
agent knows the disks its predecessor plugged in, and nothing has to be kept in step), and
which block nodes exist from query-named-block-nodes.

- attach: blockdev-add the file node, then the format node, then device_add; a failed step
  deletes what the earlier ones added, so a failed attach leaves no node behind. An id that is
  attached already (same file) is success; nodes of the id without a device (an attach or
  detach that was interrupted) are deleted first.
- detach: device_del asks the guest to let go (ACPI hot-plug: the guest OS must answer);
  QEMU says DEVICE_DELETED with our id once it has, and only then are the nodes deleted
  (format, then file), which also releases the image's lock. A guest that does not answer in
  time gets a TemporaryError: the request stays pending in QEMU, and detaching again later
  finishes the job. An id that is not attached is success (its leftover nodes are deleted).
- resize: block_resize of the format node; grow only. virtio-blk tells the guest at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any

from corral.agent.compute.disks import (
    check_disk,
    check_disk_id,
    check_grow,
    machine_has_hotplug,
)
from corral.agent.compute.qemu.blockdev import (
    HOTPLUG_PORTS,
    AttachedDisk,
    attached_disks,
    device_options,
    disk_block_nodes,
    free_port,
    is_q35,
    named_nodes,
    node_names,
)
from corral.agent.compute.qemu.qmp import GuestMonitor, qmp_error_class
from corral.errors import Conflict, HostError, NotFound, TemporaryError
from corral.model.rpc import DiskAttachment

log = logging.getLogger(__name__)

DETACH_TIMEOUT_S = 20.0
_RETRY_DETACH_AFTER_S = 5.0


async def query_disks(monitor: GuestMonitor) -> list[AttachedDisk]:
    """The guest's disks now, in QEMU's order (launch order, then attach order)."""
    return attached_disks(await monitor.execute("query-block"))


async def attach_disk(
    monitor: GuestMonitor, guest: str, machine: str, disk: DiskAttachment
) -> None:
    """Hot-plug `disk` into the running guest (see the module docstring)."""
    check_disk(disk)
    if not machine_has_hotplug(machine):
        raise Conflict(
            f"guest {guest!r} is a {machine} machine, which cannot hot-plug disks: add disk "
            f"{disk.id!r} to its spec and restart it, or use machine type pc or q35",
            code="hotplug_unsupported",
        )
    present = {d.id: d for d in await query_disks(monitor)}.get(disk.id)
    if present is not None:
        if _same_file(present.path, disk.path) and present.read_only == disk.read_only:
            return
        raise Conflict(
            f"guest {guest!r} already has a disk {disk.id!r} (from {present.path}, "
            f"read-only {present.read_only}); detach it before attaching {disk.path} as it",
            code="disk_id_in_use",
        )
    await _delete_nodes(monitor, guest, disk.id)
    bus = None
    if is_q35(machine):
        bus = free_port(await monitor.execute("query-pci"))
        if bus is None:
            raise Conflict(
                f"guest {guest!r} has no free hot-plug port for disk {disk.id!r}: a q35 guest "
                f"gets {HOTPLUG_PORTS} spare pcie-root-ports at launch and all are in use. "
                "Restart it (its disks are then given at launch) or detach a disk first",
                code="no_hotplug_port",
            )
    added: list[str] = []
    try:
        for options in disk_block_nodes(disk):
            await monitor.execute("blockdev-add", options)
            added.append(str(options["node-name"]))
        await monitor.execute("device_add", device_options(disk.id, disk.serial, machine, bus))
    except HostError as err:
        await asyncio.shield(_undo_nodes(monitor, guest, added))
        raise HostError(
            f"cannot attach disk {disk.id!r} ({disk.path}) to guest {guest!r}: {err.message}",
            code="disk_attach_failed",
        ) from err
    except BaseException:
        await asyncio.shield(_undo_nodes(monitor, guest, added))
        raise


async def detach_disk(
    monitor: GuestMonitor,
    guest: str,
    machine: str,
    disk_id: str,
    *,
    exited: asyncio.Event,
    timeout_s: float = DETACH_TIMEOUT_S,
) -> None:
    """Hot-unplug disk `disk_id` and delete its nodes (see the module docstring)."""
    check_disk_id(disk_id)
    if disk_id in {d.id for d in await query_disks(monitor)}:
        if not machine_has_hotplug(machine):
            raise Conflict(
                f"guest {guest!r} is a {machine} machine, which cannot hot-unplug disk "
                f"{disk_id!r}: remove it from its spec and restart it",
                code="hotplug_unsupported",
            )
        with monitor.expecting("DEVICE_DELETED", device=disk_id) as deleted:
            try:
                await monitor.execute("device_del", {"id": disk_id})
            except HostError as err:
                # Gone already: an earlier request the guest answered after all.
                if qmp_error_class(err) != "DeviceNotFound":
                    raise HostError(
                        f"cannot detach disk {disk_id!r} from guest {guest!r}: {err.message}",
                        code="disk_detach_failed",
                    ) from err
            else:
                if not await _released(deleted, exited, timeout_s):
                    raise TemporaryError(
                        f"guest {guest!r} did not release disk {disk_id!r} within "
                        f"{timeout_s:g} s. Its OS must acknowledge the unplug (ACPI hot-plug); "
                        "a guest that is paused, still booting or has no hot-plug support does "
                        "not. The request stays pending: detach again later to finish",
                        delay=_RETRY_DETACH_AFTER_S,
                        code="disk_not_released",
                    )
        if exited.is_set():
            return  # QEMU is gone, and with it every node
    await _delete_nodes(monitor, guest, disk_id)


async def resize_disk(monitor: GuestMonitor, guest: str, disk_id: str, size_bytes: int) -> None:
    """Grow disk `disk_id` of the running guest to `size_bytes` (the same size is a no-op)."""
    check_disk_id(disk_id)
    present = {d.id: d for d in await query_disks(monitor)}.get(disk_id)
    if present is None:
        raise NotFound(f"guest {guest!r} has no disk {disk_id!r} attached")
    if present.read_only:
        raise Conflict(
            f"disk {disk_id!r} of guest {guest!r} is attached read-only; it cannot be resized",
            code="invalid_state",
        )
    if not check_grow(disk_id, present.size_bytes, size_bytes):
        return
    try:
        await monitor.execute("block_resize", {"node-name": present.node, "size": size_bytes})
    except HostError as err:
        raise HostError(
            f"cannot resize disk {disk_id!r} of guest {guest!r} to {size_bytes} bytes: "
            f"{err.message}",
            code="disk_resize_failed",
        ) from err


async def block_node_names(monitor: GuestMonitor) -> set[str]:
    """Every named block node QEMU holds now."""
    return named_nodes(await monitor.execute("query-named-block-nodes", {"flat": True}))


async def _released(
    deleted: asyncio.Future[dict[str, Any]], exited: asyncio.Event, timeout_s: float
) -> bool:
    """Wait for the DEVICE_DELETED future or the guest's exit; False on timeout."""
    gone: asyncio.Future[Any] = asyncio.ensure_future(exited.wait())
    try:
        done, _ = await asyncio.wait(
            {deleted, gone}, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    return bool(done)


async def _delete_nodes(monitor: GuestMonitor, guest: str, disk_id: str) -> None:
    """Delete the disk's nodes that exist (format first: it holds the file node)."""
    existing = await block_node_names(monitor)
    for node in node_names(disk_id):
        if node not in existing:
            continue
        try:
            await monitor.execute("blockdev-del", {"node-name": node})
        except HostError as err:
            raise HostError(
                f"QEMU of guest {guest!r} did not delete block node {node!r} of disk "
                f"{disk_id!r}: {err.message}",
                code="disk_detach_failed",
            ) from err


async def _undo_nodes(monitor: GuestMonitor, guest: str, added: Iterable[str]) -> None:
    for node in reversed(list(added)):
        try:
            await monitor.execute("blockdev-del", {"node-name": node})
        except HostError as err:
            log.error(
                "guest %s: cannot delete block node %s after a failed attach: %s",
                guest,
                node,
                err.message,
            )


def _same_file(left: str, right: str) -> bool:
    if left == right:
        return True
    try:
        return os.path.samefile(left, right)
    except OSError:
        return False
