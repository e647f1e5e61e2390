"""Backups of one volume, run in the volume's queue right after its reconcile pass.

The queue keeps one pass per volume at a time: a backup never runs while the volume grows or
is deleted, and two backups of one volume never overlap, so the point a backup builds on is
chosen when it starts (plan_backup) and cannot vanish under it.

A point is recorded `pending` before the agent writes it and `ready` after, so a server that
dies half-way leaves a record the next start rolls back (controller/recovery.py). Deleting
points removes their files through the agent (abort_backup removes a backup's target file),
then the records; it is level-triggered on points flagged `deleting`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from corral.bus.agent_link import AgentAPI, ProgressFn
from corral.controller.backup_plan import (
    BACKUP,
    BACKUP_DELETE,
    BACKUP_KINDS,
    newest_deleted_reason,
    plan_backup,
)
from corral.controller.disk_steps import volume_attachment
from corral.controller.disks import disk_id, disk_serial
from corral.controller.recorder import Recorder
from corral.errors import CorralError, TemporaryError
from corral.model.operation import OperationError
from corral.model.rpc import DiskAttachment, GuestRunState
from corral.model.rpc_snapshots import BackupRequest, BackupResult
from corral.model.snapshot import BackupKind, BackupPoint
from corral.model.storage import VolumeState
from corral.store import backups as backup_store
from corral.store import operations as operation_store
from corral.store import volumes as volume_store
from corral.store.backups import BackupRecord
from corral.store.operations import OperationRecord
from corral.store.volumes import VolumeRecord

log = logging.getLogger(__name__)

TARGET_KIND = "volume"
_PROGRESS_INTERVAL_S = 0.25
_WAIT_S = 0.5


def backup_disk(volume: str, record: VolumeRecord | None, disk_path: str) -> DiskAttachment:
    """The disk a request about an existing point names: the volume as it is now, or, once
    the volume is gone, its name and the file it had (the agent then only removes the
    point's files: there is no disk left whose bitmap could change)."""
    if record is not None and record.volume.status.path:
        return volume_attachment(record.volume, read_only=False, boot=False)
    # An absolute path that is not a regular file when the old one is not known either.
    path = disk_path or "/dev/null"
    return DiskAttachment(id=disk_id(volume), path=path, serial=disk_serial(volume))


def backup_event_data(point: BackupPoint) -> dict[str, object]:
    """The payload of backup.created / backup.deleted events (kind volume)."""
    return {
        "backup": point.id,
        "kind": point.kind.value,
        "parent": point.parent,
        "size_bytes": point.size_bytes,
    }


class BackupFailed(CorralError):
    """The backup cannot be made: its operation fails with this code."""


class BackupRunner:
    """Writes and deletes the restore points of one volume at a time."""

    def __init__(self, recorder: Recorder, agent: AgentAPI, backups_dir: Path | None) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._backups_dir = backups_dir

    def __repr__(self) -> str:
        return f"BackupRunner(backups_dir={str(self._backups_dir)!r})"

    async def run(self, volume: str) -> None:
        """Do the volume's backup work, oldest request first, then finish deletions."""
        with self._db.transaction() as session:
            records = [
                record
                for record in operation_store.running_operations(session, TARGET_KIND, volume)
                if record.operation.kind in BACKUP_KINDS
            ]
        for record in records:
            if record.operation.kind == BACKUP:
                await self._backup(volume, record)
        ops = [r.operation.id for r in records if r.operation.kind == BACKUP_DELETE]
        await self._delete_points(volume, ops)

    # -- backup ------------------------------------------------------------------------------
    async def _backup(self, volume: str, op_record: OperationRecord) -> None:
        op_id = op_record.operation.id
        try:
            await self._write_point(volume, op_id, full=bool(op_record.params.get("full")))
        except BackupFailed as err:
            log.info("backup of %s: %s", volume, err.message)
            self._recorder.finish(op_id, error=OperationError(code=err.code, message=err.message))

    async def _guest_of(self, instance: str | None) -> str | None:
        """The running guest that has the volume's disk open, if any."""
        if instance is None:
            return None
        try:
            seen = await self._agent.observe(instance)
        except TemporaryError:
            raise
        except (CorralError, OSError) as err:
            raise TemporaryError(f"could not observe guest {instance!r}: {err}") from err
        return instance if seen.state in (GuestRunState.RUNNING, GuestRunState.PAUSED) else None

    async def _write_point(self, volume: str, op_id: str, *, full: bool) -> None:
        with self._db.transaction() as session:
            record = volume_store.find_volume(session, volume)
        if record is None or record.deleting:
            raise BackupFailed(f"volume {volume!r} is being deleted", code="invalid_state")
        state = record.volume.status.state
        if state == VolumeState.PENDING:
            raise TemporaryError(f"waiting for volume {volume!r} to be made", delay=_WAIT_S)
        if state != VolumeState.READY or self._backups_dir is None:
            raise BackupFailed(f"volume {volume!r} is {state.value}", code="invalid_state")
        guest = await self._guest_of(record.volume.status.attached_to)
        with self._db.transaction() as session:
            points = backup_store.list_points(session, volume)
            plan = plan_backup(
                points,
                backup_store.get_chain(session, volume),
                volume_uid=record.volume.uid,
                full_requested=full,
            )
            pending = backup_store.start_backup(
                session,
                volume,
                record.volume.uid,
                kind=plan.kind,
                parent=plan.parent.id if plan.parent else None,
                backups_dir=str(self._backups_dir),
                disk_path=record.volume.status.path or "",
                instance=guest,
                operation=op_id,
                reason=plan.reason,
            )
        request = BackupRequest(
            instance=guest,
            disk=volume_attachment(record.volume, read_only=False, boot=False),
            target_path=pending.point.path,
            parent_path=plan.parent.path if plan.parent else None,
        )
        on = f"on top of {plan.parent.id}" if plan.parent else f"full: {plan.reason}"
        where = f"attached to running {guest}" if guest else "detached"
        self._recorder.progress(
            [op_id], 0.02, f"backing up volume {volume} ({where}) to {pending.id} ({on})"
        )
        try:
            result = await self._agent.backup(request, self._progress_fn(op_id, pending.id))
        except TemporaryError:
            await self._roll_back(pending, request)
            raise
        except CorralError as err:
            await self._roll_back(pending, request)
            raise BackupFailed(
                f"backup of volume {volume!r} failed: {err.message}", code=err.code
            ) from err
        self._record_point(volume, op_id, pending, plan.parent, plan.reason, result)

    def _progress_fn(self, op_id: str, point: str) -> ProgressFn:
        last = 0.0

        def progress(fraction: float, message: str) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < _PROGRESS_INTERVAL_S and fraction < 1.0:
                return
            last = now
            text = f"{point}: {message}" if message else f"writing {point}"
            self._recorder.progress([op_id], 0.02 + 0.96 * min(max(fraction, 0.0), 1.0), text)

        return progress

    def _record_point(
        self,
        volume: str,
        op_id: str,
        pending: BackupRecord,
        parent: BackupPoint | None,
        planned_reason: str,
        result: BackupResult,
    ) -> None:
        incremental = parent is not None and result.kind == BackupKind.INCREMENTAL.value
        kind = BackupKind.INCREMENTAL if incremental else BackupKind.FULL
        reason = "" if incremental else (result.reason or planned_reason)
        with self._db.transaction() as session:
            point = backup_store.finish_backup(
                session,
                volume,
                pending.id,
                kind=kind,
                parent=parent.id if incremental and parent else None,
                size_bytes=result.file_size_bytes,
                virtual_size_bytes=result.virtual_size_bytes,
                duration_ms=result.duration_ms,
                reason=reason,
            )
        self._recorder.publish("backup.created", "volume", volume, backup_event_data(point))
        on = f" on top of {point.parent}" if point.parent else ""
        self._recorder.finish(
            op_id,
            message=f"backup {point.id} of volume {volume}: {kind.value}{on}, "
            f"{point.size_bytes} bytes in {result.duration_ms / 1000:.1f} s",
            result={"backup": point.model_dump(mode="json")},
        )
        log.info("backup %s of %s written (%s, %d bytes)", point.id, volume, kind, point.size_bytes)

    async def _roll_back(self, pending: BackupRecord, request: BackupRequest) -> None:
        """Remove what a failed backup left (the agent's abort removes its target file)."""
        try:
            await self._agent.abort_backup(request)
        except CorralError as err:
            log.warning("could not clean up backup %s: %s", pending.point.path, err.message)
        with self._db.transaction() as session:
            backup_store.drop_backup(session, pending.point.volume, pending.id)

    # -- delete ------------------------------------------------------------------------------
    async def _delete_points(self, volume: str, op_ids: list[str]) -> None:
        with self._db.transaction() as session:
            doomed = backup_store.deleting_points(session, volume)
            if not doomed:
                for op_id in op_ids:
                    self._recorder.finish(op_id, message="the restore points are deleted")
                return
            before = backup_store.list_points(session, volume)
            before += [record.point for record in doomed]
            before.sort(key=lambda p: (len(p.id), p.id))  # b0009 < b0010 < b10000
            volume_record = volume_store.find_volume(session, volume)
        # A guest that has the disk open must let the agent drop its bitmap through QMP.
        attached = volume_record.volume.status.attached_to if volume_record else None
        guest = await self._guest_of(attached)
        for record in doomed:  # newest first: a point never loses its base before it goes
            for op_id in op_ids:
                self._recorder.progress([op_id], 0.3, f"deleting restore point {record.id}")
            request = BackupRequest(
                instance=guest,
                disk=backup_disk(volume, volume_record, record.disk_path),
                target_path=record.point.path,
            )
            try:
                await self._agent.abort_backup(request)
            except TemporaryError:
                raise
            except CorralError as err:
                raise TemporaryError(
                    f"restore point {record.id} of {volume!r} could not be removed: {err.message}"
                ) from err
            with self._db.transaction() as session:
                backup_store.drop_backup(session, volume, record.id)
            self._recorder.publish(
                "backup.deleted", "volume", volume, backup_event_data(record.point)
            )
        deleted = [record.id for record in doomed]
        reason = newest_deleted_reason(before, deleted)
        if reason is not None:
            with self._db.transaction() as session:
                backup_store.require_full(session, volume, reason)
        for op_id in op_ids:
            self._recorder.finish(
                op_id, message=f"deleted restore point(s) {', '.join(reversed(deleted))}"
            )
