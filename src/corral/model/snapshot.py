"""Snapshots of instances and backups of volumes.

Snapshots are qcow2 *internal* snapshots taken atomically across all of an instance's qcow2
disks (a QMP transaction), optionally with the guest's memory (`snapshot-save`): no backing
chains to grow, so nothing needs merging and taking one costs the same for a 1 GiB or a 10 GiB
disk. Corral records the parent of each snapshot, which makes the snapshots of an instance a
tree (revert, then snapshot again, branches it).

Backups are full or incremental copies of a volume into a backup directory, driven by a
persistent QEMU dirty bitmap; each restore point is a qcow2 file whose backing file is the point
before it, so any point restores to a new volume by one `qemu-img convert`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.model.names import name_problem
from corral.model.storage import DEFAULT_POOL


def _check(value: str, what: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return value


class SnapshotState(StrEnum):
    """Lifecycle of a snapshot."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


class SnapshotCreate(BaseModel):
    """Body of POST /v1/instances/{name}/snapshots."""

    model_config = ConfigDict(extra="forbid")

    name: str
    memory: bool = False
    quiesce: bool = True
    description: str = Field(default="", max_length=1000)

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check(value, "name")


class Snapshot(BaseModel):
    """A point-in-time of an instance's disks (and memory, when `memory`)."""

    instance: str
    name: str
    uid: str
    parent: str | None = None
    memory: bool = False
    quiesced: bool = False
    description: str = ""
    volumes: list[str] = Field(default_factory=list)
    state: SnapshotState = SnapshotState.PENDING
    current: bool = False  # the instance's present state descends from this snapshot
    created_at: datetime
    duration_ms: float | None = None
    message: str = ""


class BackupKind(StrEnum):
    """Full copy, or only the clusters written since the previous point."""

    FULL = "full"
    INCREMENTAL = "incremental"


class BackupCreate(BaseModel):
    """Body of POST /v1/volumes/{name}/backups: incremental when possible unless `full`."""

    model_config = ConfigDict(extra="forbid")

    full: bool = False


class BackupPoint(BaseModel):
    """One restore point of a volume."""

    volume: str
    id: str
    kind: BackupKind
    parent: str | None = None
    path: str
    size_bytes: int = 0  # bytes in this point's file (an incremental holds only what changed)
    virtual_size_bytes: int = 0
    created_at: datetime
    duration_ms: float | None = None
    reason: str = ""  # e.g. why an incremental became full ("bitmap lost after a crash")


class RestoreRequest(BaseModel):
    """Body of POST /v1/volumes/{name}/backups/{id}/actions/restore."""

    model_config = ConfigDict(extra="forbid")

    volume: str
    pool: str = DEFAULT_POOL

    @field_validator("volume", "pool")
    @classmethod
    def _names(cls, value: str) -> str:
        return _check(value, "name")
