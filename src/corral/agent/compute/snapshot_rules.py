"""Rules for snapshots and backups that every backend applies the same way (pure functions).

Snapshots: every writable disk of the request takes part; read-only disks are left out (they
cannot change, so there is nothing to go back to). Internal snapshots live inside qcow2 files,
so one writable raw disk makes the snapshot impossible, and it is refused before anything is
touched (all or nothing). A memory snapshot keeps the guest's RAM inside the first writable
qcow2 disk (QEMU's `vmstate`), so it needs one.

Backups: an incremental point needs its parent point on the host and a persistent dirty bitmap
on the disk that exists and is consistent; when any of that is missing the backup is full and
`reason` says why (an incremental on a wrong base would restore garbage silently).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from corral.agent.compute.disks import check_disk
from corral.errors import InvalidInput
from corral.model.names import validate_name
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import BackupRequest, SnapshotRequest
from corral.model.snapshot import BackupKind

PARTIAL_SUFFIX = ".partial"


def check_tag(tag: str) -> str:
    """A snapshot tag follows the name rule (it starts with a letter, so QEMU never takes it
    for a numeric snapshot id)."""
    return validate_name(tag, "tag")


def check_snapshot_request(req: SnapshotRequest) -> None:
    """Refuse a bad instance name, tag, or disk before anything is looked at."""
    validate_name(req.instance, "instance")
    check_tag(req.tag)
    for index, disk in enumerate(req.disks):
        check_disk(disk, f"disks[{index}]")


def snapshot_disks(disks: Sequence[DiskAttachment], *, memory: bool) -> list[DiskAttachment]:
    """The disks a snapshot is taken on (writable ones, in the request's order); refuse a
    writable raw disk, and a snapshot with no disk to hold it."""
    for index, disk in enumerate(disks):
        check_disk(disk, f"disks[{index}]")
    writable = [disk for disk in disks if not disk.read_only]
    raw = [disk.id for disk in writable if disk.format != "qcow2"]
    if raw:
        raise InvalidInput(
            f"disk(s) {', '.join(repr(r) for r in raw)} are raw: snapshots are stored inside "
            "qcow2 files. Convert the volume to qcow2, attach it read-only, or detach it before "
            "taking a snapshot",
            code="snapshot_needs_qcow2",
            field="disks",
        )
    if not writable:
        if memory:
            raise InvalidInput(
                "a memory snapshot stores the guest's RAM in one of its qcow2 disks, and this "
                "instance has no writable one: attach a qcow2 volume first",
                code="memory_snapshot_needs_disk",
                field="disks",
            )
        raise InvalidInput(
            "the instance has no writable disk, so a snapshot would hold nothing; attach a "
            "qcow2 volume first",
            code="snapshot_needs_disk",
            field="disks",
        )
    return writable


def _check_host_path(path: str, field: str) -> Path:
    if (
        not os.path.isabs(path)
        or any(part in ("..", ".") for part in path.split("/"))
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
        or path.endswith("/")
    ):
        raise InvalidInput(
            f"{field} {path!r} must be an absolute file path without '..' or control characters",
            code="invalid_path",
            field=field,
        )
    return Path(path)


def check_backup_request(req: BackupRequest) -> None:
    """Refuse a backup request no backend could honour, before touching anything."""
    if req.instance is not None:
        validate_name(req.instance, "instance")
    check_disk(req.disk, "disk")
    validate_name(req.bitmap, "bitmap")
    target = _check_host_path(req.target_path, "target_path")
    if target.name.endswith(PARTIAL_SUFFIX):
        raise InvalidInput(
            f"target_path {req.target_path!r} must not end with {PARTIAL_SUFFIX!r} (the agent "
            "writes there while the backup runs)",
            code="invalid_path",
            field="target_path",
        )
    if req.parent_path is not None:
        parent = _check_host_path(req.parent_path, "parent_path")
        if parent == target:
            raise InvalidInput(
                "target_path and parent_path are the same file",
                code="invalid_path",
                field="parent_path",
            )
    if target == Path(req.disk.path):
        raise InvalidInput(
            "target_path is the disk itself", code="invalid_path", field="target_path"
        )


def partial_path(target_path: str) -> Path:
    """Where a backup is written until it is complete (then renamed to `target_path`)."""
    return Path(target_path + PARTIAL_SUFFIX)


class BitmapState(StrEnum):
    """A persistent dirty bitmap as found on a disk."""

    OK = "ok"
    MISSING = "missing"
    INCONSISTENT = "inconsistent"  # the image was not closed cleanly (QEMU killed, host crash)
    UNTRUSTED = "untrusted"  # an interrupted backup may have reset it for a point now lost


def choose_backup_kind(
    req: BackupRequest,
    *,
    parent_exists: bool,
    bitmap: BitmapState,
    running: bool,
) -> tuple[BackupKind, str]:
    """Incremental when asked and safe; otherwise full, with the reason when incremental was
    asked (the most useful reason first: what broke the chain, then what the agent cannot do)."""
    if req.parent_path is None:
        return BackupKind.FULL, ""
    disk = req.disk.id
    if req.disk.format != "qcow2":
        reason = f"disk {disk!r} is raw: only qcow2 disks keep a persistent dirty bitmap"
    elif not parent_exists:
        reason = f"the previous point {req.parent_path} is missing on this host"
    elif bitmap is BitmapState.MISSING:
        reason = (
            f"dirty bitmap {req.bitmap!r} is not on disk {disk!r}: never made, lost because "
            "QEMU was killed before it could store it, or dropped when the disk was reverted "
            "to a snapshot"
        )
    elif bitmap is BitmapState.INCONSISTENT:
        reason = (
            f"dirty bitmap {req.bitmap!r} of disk {disk!r} is inconsistent: QEMU did not close "
            "the image cleanly (killed, or the host crashed), so changes may be missing from it"
        )
    elif bitmap is BitmapState.UNTRUSTED:
        reason = (
            f"an earlier attempt at backup {req.target_path} was interrupted after QEMU may "
            f"have reset dirty bitmap {req.bitmap!r} of disk {disk!r}"
        )
    elif not running:
        reason = (
            f"disk {disk!r} is not attached to a running guest (its instance is stopped, or "
            "it is detached): its backups are then full copies, and its dirty bitmap is reset "
            "so that the next backup while a guest runs with it is incremental again"
        )
    else:
        return BackupKind.INCREMENTAL, ""
    return BackupKind.FULL, reason
