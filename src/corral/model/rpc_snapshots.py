"""RPC messages for snapshots and backups (controller <-> agent)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from corral.model.rpc import DiskAttachment


class SnapshotRequest(BaseModel):
    """Take, revert to, or delete the snapshot `tag` on an instance's disks.

    The agent works on the running guest through QMP when it runs, else on the files with
    qemu-img. `memory` snapshots need the guest running (take) and revert it in place.
    """

    instance: str
    tag: str
    disks: list[DiskAttachment] = Field(default_factory=list)
    memory: bool = False
    quiesce: bool = True


class SnapshotResult(BaseModel):
    """What taking a snapshot did."""

    tag: str
    memory: bool
    quiesced: bool  # the guest agent froze the filesystems around the snapshot
    running: bool  # taken from a running guest (QMP) or from files (qemu-img)
    duration_ms: float
    vmstate_bytes: int = 0


class BackupRequest(BaseModel):
    """Back up one disk of an instance (or a detached volume) into `target_path`.

    `parent_path` set: incremental on top of that point, through the persistent bitmap
    `bitmap`; the agent falls back to a full backup when the bitmap is missing or inconsistent
    (e.g. after QEMU was killed) and says so.
    """

    instance: str | None = None  # running guest holding the disk, if any
    disk: DiskAttachment
    target_path: str
    parent_path: str | None = None
    bitmap: str = "corral-backup"


class BackupResult(BaseModel):
    """What a backup wrote."""

    kind: str  # "full" or "incremental"
    target_path: str
    file_size_bytes: int
    virtual_size_bytes: int
    duration_ms: float
    reason: str = ""  # why it is full when incremental was asked
