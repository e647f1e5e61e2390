"""Snapshot records: one row per snapshot of an instance, forming a tree per instance.

Who writes what: the API inserts a pending snapshot (and flags one for deletion); the
controller, working through the instance's queue, fills in its parent and volumes when it
takes it, marks it ready or failed, moves `current`, and removes the row when its tags are
gone from the disks. Removing a snapshot keeps the tree: its children hang from its parent,
and if it was current its parent becomes current.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import Conflict, NotFound
from corral.model.snapshot import Snapshot, SnapshotCreate, SnapshotState
from corral.store.schema import SnapshotRow
from corral.store.types import utcnow


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot plus what only the control plane needs: its tag on disk, and whether the
    guest's filesystems should be frozen around it."""

    snapshot: Snapshot
    tag: str
    quiesce: bool = True

    @property
    def name(self) -> str:
        """The snapshot's name."""
        return self.snapshot.name


TAG_NAME_LENGTH = 54  # + "-" + 8 hex digits = 63, the longest name the agent takes as a tag


def snapshot_tag(name: str, uid: str) -> str:
    """The qcow2 internal snapshot name of a snapshot: its name (its first 54 characters)
    plus 8 hex digits of its uid.

    Readable in `qemu-img snapshot -l`, safe (it follows the object-name rule, so it never
    looks like a qcow2 snapshot id), and new for every snapshot, so a snapshot made again
    under an old name never meets a tag its predecessor left behind.
    """
    return f"{name[:TAG_NAME_LENGTH].rstrip('-')}-{uid.replace('-', '')[:8]}"


def _not_found(instance: str, name: str) -> NotFound:
    return NotFound(
        f"instance {instance!r} has no snapshot {name!r}; `corral snapshot list {instance}` "
        "shows its snapshots"
    )


def _to_model(row: SnapshotRow) -> Snapshot:
    return Snapshot(
        instance=row.instance,
        name=row.name,
        uid=row.uid,
        parent=row.parent,
        memory=row.memory,
        quiesced=row.quiesced,
        description=row.description,
        volumes=list(row.volumes),
        state=SnapshotState(row.state),
        current=row.current,
        created_at=row.created_at,
        duration_ms=row.duration_ms,
        message=row.message,
    )


def _to_record(row: SnapshotRow) -> SnapshotRecord:
    return SnapshotRecord(_to_model(row), row.tag, row.quiesce)


def _find_row(session: Session, instance: str, name: str) -> SnapshotRow | None:
    query = select(SnapshotRow).where(SnapshotRow.instance == instance, SnapshotRow.name == name)
    return session.scalars(query).one_or_none()


def _row(session: Session, instance: str, name: str) -> SnapshotRow:
    row = _find_row(session, instance, name)
    if row is None:
        raise _not_found(instance, name)
    return row


def _rows(session: Session, instance: str) -> list[SnapshotRow]:
    query = select(SnapshotRow).where(SnapshotRow.instance == instance).order_by(SnapshotRow.id)
    return list(session.scalars(query))


def create_snapshot(
    session: Session, instance: str, body: SnapshotCreate, volumes: Iterable[str]
) -> SnapshotRecord:
    """Insert a pending snapshot; Conflict(already_exists, field name) if the name is taken."""
    if _find_row(session, instance, body.name) is not None:
        raise Conflict(
            f"instance {instance!r} already has a snapshot {body.name!r}; choose another name "
            "or delete that snapshot first",
            code="already_exists",
            field="name",
        )
    uid = str(uuid.uuid4())
    now = utcnow()
    row = SnapshotRow(
        instance=instance,
        name=body.name,
        uid=uid,
        tag=snapshot_tag(body.name, uid),
        parent=None,
        memory=body.memory,
        quiesce=body.quiesce,
        quiesced=False,
        description=body.description,
        volumes=list(volumes),
        state=SnapshotState.PENDING.value,
        current=False,
        duration_ms=None,
        vmstate_bytes=0,
        message="",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_record(row)


def find_snapshot(session: Session, instance: str, name: str) -> SnapshotRecord | None:
    """The snapshot, or None."""
    row = _find_row(session, instance, name)
    return _to_record(row) if row is not None else None


def snapshot_of_volume(session: Session, volume: str, name: str) -> SnapshotRecord | None:
    """The ready snapshot `name` (of whichever instance) that covers `volume`, or None."""
    query = select(SnapshotRow).where(
        SnapshotRow.name == name, SnapshotRow.state == SnapshotState.READY.value
    )
    for row in session.scalars(query.order_by(SnapshotRow.id)):
        if volume in row.volumes:
            return _to_record(row)
    return None


def get_snapshot(session: Session, instance: str, name: str) -> SnapshotRecord:
    """The snapshot; NotFound if the instance has none of that name."""
    return _to_record(_row(session, instance, name))


def list_snapshots(session: Session, instance: str) -> list[Snapshot]:
    """The instance's snapshots, oldest first."""
    return [_to_model(row) for row in _rows(session, instance)]


def list_snapshot_records(session: Session, instance: str) -> list[SnapshotRecord]:
    """The instance's snapshots with their tags, oldest first."""
    return [_to_record(row) for row in _rows(session, instance)]


def snapshots_in_state(session: Session, state: SnapshotState) -> list[SnapshotRecord]:
    """Every snapshot (of any instance) in `state`, oldest first (startup recovery)."""
    query = select(SnapshotRow).where(SnapshotRow.state == state.value).order_by(SnapshotRow.id)
    return [_to_record(row) for row in session.scalars(query)]


def current_snapshot(session: Session, instance: str) -> str | None:
    """The name of the instance's current snapshot, if it has one."""
    query = select(SnapshotRow.name).where(
        SnapshotRow.instance == instance, SnapshotRow.current.is_(True)
    )
    return session.scalars(query).first()


def begin_snapshot(
    session: Session, instance: str, name: str, parent: str | None, volumes: Iterable[str]
) -> SnapshotRecord:
    """Record what the snapshot is about to be taken of, before the agent takes it."""
    row = _row(session, instance, name)
    row.parent = parent
    row.volumes = list(volumes)
    row.updated_at = utcnow()
    session.flush()
    return _to_record(row)


def set_current(session: Session, instance: str, name: str | None) -> None:
    """Make `name` the instance's current snapshot (None: no snapshot is current)."""
    for row in _rows(session, instance):
        is_current = row.name == name
        if row.current != is_current:
            row.current = is_current
            row.updated_at = utcnow()


def mark_snapshot_ready(
    session: Session,
    instance: str,
    name: str,
    *,
    quiesced: bool,
    duration_ms: float | None,
    vmstate_bytes: int = 0,
) -> Snapshot:
    """The snapshot was taken: ready, and the instance's current snapshot."""
    row = _row(session, instance, name)
    row.state = SnapshotState.READY.value
    row.quiesced = quiesced
    row.duration_ms = duration_ms
    row.vmstate_bytes = vmstate_bytes
    row.message = ""
    row.updated_at = utcnow()
    set_current(session, instance, name)
    session.flush()
    return _to_model(row)


def mark_snapshot_failed(session: Session, instance: str, name: str, message: str) -> None:
    """The snapshot could not be taken (no disk keeps its tag); it stays to say why."""
    row = _find_row(session, instance, name)
    if row is None:
        return
    row.state = SnapshotState.FAILED.value
    row.current = False
    row.message = message
    row.updated_at = utcnow()


def mark_snapshot_deleting(session: Session, instance: str, name: str) -> Snapshot:
    """Flag the snapshot for deletion; the controller drops its tags, then the row."""
    row = _row(session, instance, name)
    row.state = SnapshotState.DELETING.value
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def remove_snapshot(session: Session, instance: str, name: str) -> None:
    """Remove the row, keeping the tree: its children get its parent, and if it was current
    its parent becomes current. Idempotent."""
    row = _find_row(session, instance, name)
    if row is None:
        return
    now = utcnow()
    for other in _rows(session, instance):
        if other.parent == name:
            other.parent = row.parent
            other.updated_at = now
        if row.current and other.name == row.parent:
            other.current = True
            other.updated_at = now
    session.delete(row)


def remove_instance_snapshots(session: Session, instance: str) -> list[str]:
    """Remove every snapshot row of an instance (it is being deleted); their names."""
    rows = _rows(session, instance)
    for row in rows:
        session.delete(row)
    return [row.name for row in rows]
