"""What the API asks of backups: list and show restore points, back up, delete, restore.

Backing up and deleting points run in the volume's queue (controller/backup_runner.py), one at
a time with the volume's own changes. A restore makes a new volume whose first bytes are the
restore point (a full copy through the volume reconciler, so a crash half-way is handled like
any volume creation). Points outlive their volume: listing, showing, restoring and deleting
them work after the volume was deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.controller.backup_plan import (
    BACKUP,
    BACKUP_DELETE,
    BACKUP_IN_USE,
    BACKUP_RESTORE,
    points_to_delete,
)
from corral.controller.recorder import Recorder
from corral.controller.storage_checks import VolumeFields, check_new_volume
from corral.errors import Conflict, NotFound
from corral.model.operation import Operation
from corral.model.snapshot import BackupCreate, BackupPoint, RestoreRequest
from corral.model.storage import MIN_VOLUME_BYTES, VolumeFormat, VolumeSpec, VolumeState
from corral.store import backups as backup_store
from corral.store import operations as operation_store
from corral.store import volumes as volume_store

TARGET_KIND = "volume"
RESTORE_FIELDS = VolumeFields(name="volume", pool="pool", size="volume")


def _volume_not_found(volume: str) -> NotFound:
    return NotFound(
        f"volume {volume!r} does not exist and has no backups; `corral volume list` shows "
        "the volumes"
    )


class BackupService:
    """Restore points as the API sees them."""

    def __init__(
        self, recorder: Recorder, backups_dir: Path | None, enqueue: Callable[[str], None]
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._backups_dir = backups_dir
        self._enqueue = enqueue

    def __repr__(self) -> str:
        return f"BackupService(backups_dir={str(self._backups_dir)!r})"

    def list(self, volume: str) -> list[BackupPoint]:
        """The ready restore points of a volume, oldest first."""
        with self._db.transaction() as session:
            exists = volume_store.find_volume(session, volume) is not None
            if not exists and not backup_store.has_backups(session, volume):
                raise _volume_not_found(volume)
            return backup_store.list_points(session, volume)

    def get(self, volume: str, point: str) -> BackupPoint:
        """One ready restore point."""
        with self._db.transaction() as session:
            return backup_store.get_point(session, volume, point)

    def create(self, volume: str, body: BackupCreate) -> Operation:
        """Start a `backup` operation: full, or incremental when the chain allows it."""
        if self._backups_dir is None:
            raise Conflict("this server has no backup directory configured", code="invalid_state")
        with self._db.transaction() as session:
            record = volume_store.get_volume(session, volume)
            state = record.volume.status.state
            if record.deleting or state not in (VolumeState.READY, VolumeState.PENDING):
                shown = "being deleted" if record.deleting else state.value
                raise Conflict(
                    f"volume {volume!r} is {shown}; only a ready volume can be backed up",
                    code="invalid_state",
                )
            op = operation_store.create_operation(
                session,
                BACKUP,
                TARGET_KIND,
                volume,
                params={"full": body.full},
                message=f"waiting to back up volume {volume}",
            )
        self._recorder.operation_created(op)
        self._enqueue(volume)
        return op

    def delete(self, volume: str, point: str, *, chain: bool) -> Operation:
        """Start a `backup-delete` operation for `point` (and, with `chain`, every point on
        top of it); Conflict(backup_in_use) when other points or a restore need it."""
        with self._db.transaction() as session:
            found = backup_store.find_backup(session, volume, point)
            if found is None or found.state == backup_store.PENDING:
                raise backup_store.point_not_found(volume, point)
            if found.state == backup_store.DELETING:
                for running in operation_store.running_operations(session, TARGET_KIND, volume):
                    if running.operation.kind == BACKUP_DELETE and point in running.params.get(
                        "points", []
                    ):
                        return running.operation
            points = backup_store.list_points(session, volume)
            doomed = points_to_delete(points, point, chain=chain)
            for record in backup_store.list_backup_records(session, volume):
                if record.state == backup_store.PENDING and record.point.parent in doomed:
                    raise Conflict(
                        f"backup {record.id} of volume {volume!r} is being written on top of "
                        f"restore point {record.point.parent!r}; wait for it to finish",
                        code=BACKUP_IN_USE,
                    )
            for doomed_point in points:
                if doomed_point.id not in doomed:
                    continue
                restores = volume_store.pending_restores_from(session, doomed_point.path)
                if restores:
                    raise Conflict(
                        f"restore point {doomed_point.id!r} is being restored to volume(s) "
                        f"{', '.join(restores)}; wait for that to finish",
                        code=BACKUP_IN_USE,
                    )
            backup_store.mark_deleting(session, volume, doomed)
            op = operation_store.create_operation(
                session,
                BACKUP_DELETE,
                TARGET_KIND,
                volume,
                params={"points": doomed},
                message=f"waiting to delete restore point(s) {', '.join(doomed)}",
            )
        self._recorder.operation_created(op)
        self._enqueue(volume)
        return op

    def restore(self, volume: str, point: str, body: RestoreRequest) -> Operation:
        """Make volume `body.volume` in `body.pool` from a restore point (a `backup-restore`
        operation on the new volume, done when it is ready)."""
        with self._db.transaction() as session:
            source = backup_store.get_point(session, volume, point)
            size = max(source.virtual_size_bytes, MIN_VOLUME_BYTES)
            spec = VolumeSpec(pool=body.pool, size_bytes=size, format=VolumeFormat.QCOW2)
            check_new_volume(session, body.volume, spec, RESTORE_FIELDS)
            created = volume_store.create_volume(
                session, body.volume, spec, restore_source=source.path
            )
            op = operation_store.create_operation(
                session,
                BACKUP_RESTORE,
                TARGET_KIND,
                body.volume,
                params={"generation": created.generation, "backup": f"{volume}/{point}"},
                message=f"restoring {volume}/{point} to volume {body.volume}",
            )
        self._recorder.publish(
            "volume.created",
            "volume",
            body.volume,
            {
                "uid": created.uid,
                "spec": spec.model_dump(mode="json"),
                "restored_from": {"volume": volume, "backup": point},
            },
        )
        self._recorder.operation_created(op)
        self._enqueue(body.volume)
        return op
