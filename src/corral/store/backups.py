"""Backup records: restore points of volumes, and per volume the state of its backup chain.

A point is `pending` while the agent writes it, `ready` once written, `deleting` while its
file is being removed. Points outlive their volume (that is what backups are for), so they
are keyed by the volume's name, with the uid of the volume they were taken from.

The chain row remembers the last point number handed out (ids never repeat), the uid of the
volume whose dirty bitmap the chain follows, and why the next backup must be full: the
bitmap only holds the changes since the newest point *written*, so once that point is gone
(deleted, or a backup cut short after QEMU may already have reset the bitmap), an
incremental on top of an older point would miss changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import NotFound
from corral.model.snapshot import BackupKind, BackupPoint
from corral.store.schema import BackupChainRow, BackupRow
from corral.store.types import utcnow

PENDING = "pending"
READY = "ready"
DELETING = "deleting"


@dataclass(frozen=True)
class BackupRecord:
    """A restore point plus what only the control plane needs."""

    point: BackupPoint
    state: str
    volume_uid: str
    instance: str | None = None  # the running guest that held the disk while it was backed up
    operation: str | None = None  # the backup operation that writes (wrote) it
    disk_path: str = ""  # the volume's file it was taken from

    @property
    def id(self) -> str:
        """The point's id (b0001, ...)."""
        return self.point.id


@dataclass(frozen=True)
class BackupChain:
    """The state of a volume's backup chain (see the module docstring)."""

    volume: str
    volume_uid: str
    last_seq: int = 0
    full_reason: str | None = None


def point_id(seq: int) -> str:
    """The id of the `seq`-th point of a volume: b0001, b0002, ... (sortable up to b9999;
    the store orders by number, so b10000 still comes after b9999)."""
    return f"b{seq:04d}"


def _to_point(row: BackupRow) -> BackupPoint:
    return BackupPoint(
        volume=row.volume,
        id=row.point_id,
        kind=BackupKind(row.kind),
        parent=row.parent,
        path=row.path,
        size_bytes=row.size_bytes,
        virtual_size_bytes=row.virtual_size_bytes,
        created_at=row.created_at,
        duration_ms=row.duration_ms,
        reason=row.reason,
    )


def _to_record(row: BackupRow) -> BackupRecord:
    return BackupRecord(
        _to_point(row), row.state, row.volume_uid, row.instance, row.operation, row.disk_path
    )


def _rows(session: Session, volume: str, states: tuple[str, ...] | None = None) -> list[BackupRow]:
    query = select(BackupRow).where(BackupRow.volume == volume).order_by(BackupRow.seq)
    if states is not None:
        query = query.where(BackupRow.state.in_(states))
    return list(session.scalars(query))


def _find_row(session: Session, volume: str, point: str) -> BackupRow | None:
    query = select(BackupRow).where(BackupRow.volume == volume, BackupRow.point_id == point)
    return session.scalars(query).one_or_none()


def list_points(session: Session, volume: str) -> list[BackupPoint]:
    """The ready restore points of a volume, oldest first."""
    return [_to_point(row) for row in _rows(session, volume, (READY,))]


def list_backup_records(session: Session, volume: str) -> list[BackupRecord]:
    """Every point of a volume in any state, oldest first."""
    return [_to_record(row) for row in _rows(session, volume)]


def has_backups(session: Session, volume: str) -> bool:
    """True when any point (in any state) of `volume` exists."""
    query = select(BackupRow.id).where(BackupRow.volume == volume).limit(1)
    return session.scalars(query).first() is not None


def find_backup(session: Session, volume: str, point: str) -> BackupRecord | None:
    """One point in any state, or None."""
    row = _find_row(session, volume, point)
    return _to_record(row) if row is not None else None


def point_not_found(volume: str, point: str) -> NotFound:
    """The error for a restore point that does not exist (or is not written yet)."""
    return NotFound(
        f"volume {volume!r} has no restore point {point!r}; `corral backup list {volume}` "
        "shows its points"
    )


def get_point(session: Session, volume: str, point: str) -> BackupPoint:
    """One ready restore point; NotFound otherwise."""
    row = _find_row(session, volume, point)
    if row is None or row.state != READY:
        raise point_not_found(volume, point)
    return _to_point(row)


def get_chain(session: Session, volume: str) -> BackupChain | None:
    """The chain state of `volume`, or None before its first backup."""
    row = session.get(BackupChainRow, volume)
    if row is None:
        return None
    return BackupChain(row.volume, row.volume_uid, row.last_seq, row.full_reason)


def start_backup(
    session: Session,
    volume: str,
    volume_uid: str,
    *,
    kind: BackupKind,
    parent: str | None,
    backups_dir: str,
    disk_path: str,
    instance: str | None,
    operation: str | None,
    reason: str,
) -> BackupRecord:
    """Hand out the next point id and insert the point as pending; its file is
    `<backups_dir>/<volume>/<id>.qcow2`."""
    chain = session.get(BackupChainRow, volume)
    now = utcnow()
    if chain is None:
        chain = BackupChainRow(
            volume=volume, volume_uid=volume_uid, last_seq=0, full_reason=None, updated_at=now
        )
        session.add(chain)
    chain.last_seq += 1
    chain.updated_at = now
    seq = chain.last_seq
    pid = point_id(seq)
    row = BackupRow(
        volume=volume,
        volume_uid=volume_uid,
        seq=seq,
        point_id=pid,
        kind=kind.value,
        parent=parent,
        path=f"{backups_dir.rstrip('/')}/{volume}/{pid}.qcow2",
        disk_path=disk_path,
        state=PENDING,
        size_bytes=0,
        virtual_size_bytes=0,
        instance=instance,
        operation=operation,
        duration_ms=None,
        reason=reason,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_record(row)


def finish_backup(
    session: Session,
    volume: str,
    point: str,
    *,
    kind: BackupKind,
    parent: str | None,
    size_bytes: int,
    virtual_size_bytes: int,
    duration_ms: float,
    reason: str,
) -> BackupPoint:
    """The point is written: ready, and the newest base of the chain (its bitmap was reset
    by this backup, so incrementals may follow again)."""
    row = _find_row(session, volume, point)
    if row is None:
        raise NotFound(f"backup point {point!r} of volume {volume!r} vanished")
    now = utcnow()
    row.state = READY
    row.kind = kind.value
    row.parent = parent
    row.size_bytes = size_bytes
    row.virtual_size_bytes = virtual_size_bytes
    row.duration_ms = duration_ms
    row.reason = reason
    row.updated_at = now
    chain = session.get(BackupChainRow, volume)
    if chain is not None:
        chain.volume_uid = row.volume_uid
        chain.full_reason = None
        chain.updated_at = now
    session.flush()
    return _to_point(row)


def require_full(session: Session, volume: str, reason: str) -> None:
    """The next backup of `volume` must be full, because of `reason`."""
    chain = session.get(BackupChainRow, volume)
    if chain is not None:
        chain.full_reason = reason
        chain.updated_at = utcnow()


def mark_deleting(session: Session, volume: str, points: list[str]) -> None:
    """Flag points for deletion (their files are removed by the controller, then the rows)."""
    now = utcnow()
    for row in _rows(session, volume):
        if row.point_id in points:
            row.state = DELETING
            row.updated_at = now


def drop_backup(session: Session, volume: str, point: str) -> None:
    """Remove one point's row (idempotent)."""
    row = _find_row(session, volume, point)
    if row is not None:
        session.delete(row)


def point_of_operation(session: Session, operation: str) -> BackupRecord | None:
    """The point the backup operation `operation` wrote (or is writing), if any."""
    query = select(BackupRow).where(BackupRow.operation == operation)
    row = session.scalars(query).first()
    return _to_record(row) if row is not None else None


def backups_in_state(session: Session, state: str) -> list[BackupRecord]:
    """Every point (of any volume) in `state`, oldest first (startup recovery)."""
    query = select(BackupRow).where(BackupRow.state == state).order_by(BackupRow.id)
    return [_to_record(row) for row in session.scalars(query)]


def deleting_points(session: Session, volume: str) -> list[BackupRecord]:
    """The points of `volume` flagged for deletion, newest first."""
    return [_to_record(row) for row in reversed(_rows(session, volume, (DELETING,)))]


def volumes_with_deleting_points(session: Session) -> set[str]:
    """Names of the volumes that have points flagged for deletion."""
    query = select(BackupRow.volume).where(BackupRow.state == DELETING)
    return set(session.scalars(query))
