"""At start, before any queue runs: finish or roll back the snapshot and backup work a previous
server process left half-done (it was killed, or stopped while working).

- A snapshot still `pending` is asked for by its tag on every disk (agent.snapshot_tags): on all
  of them, it was taken and becomes ready (and current); otherwise whatever part exists is
  deleted (agent.snapshot_delete) and it is marked failed. Its operation says which.
- A restore point still `pending` is aborted (agent.abort_backup cancels a job QEMU may still
  run and removes the file) and its record removed; since the dirty bitmap may already have
  been reset by a job that finished unseen, the volume's next backup is a full one.
- Operations whose work was cut short (a revert, a backup or snapshot not started) fail with
  code `interrupted`. Deletions of snapshots and restore points are simply resumed by their
  runners (they are idempotent), and volume creations (restores too) by the volume reconciler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from corral.bus.agent_link import AgentAPI
from corral.controller.backup_plan import BACKUP
from corral.controller.backup_runner import backup_disk
from corral.controller.recorder import Recorder
from corral.controller.snapshot_disks import snapshot_attachments, snapshot_event
from corral.controller.snapshot_plan import SNAPSHOT_CREATE, SNAPSHOT_REVERT, snapshot_complete
from corral.errors import CorralError
from corral.model.operation import OperationError
from corral.model.rpc_snapshots import BackupRequest, SnapshotRequest
from corral.model.snapshot import SnapshotState
from corral.store import backups as backup_store
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.operations import OperationRecord
from corral.store.snapshots import SnapshotRecord

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"


@dataclass
class RecoveryReport:
    """What the recovery did (for the log and the tests)."""

    snapshots_kept: list[str] = field(default_factory=list)
    snapshots_rolled_back: list[str] = field(default_factory=list)
    backups_rolled_back: list[str] = field(default_factory=list)
    operations_interrupted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.snapshots_kept,
                self.snapshots_rolled_back,
                self.backups_rolled_back,
                self.operations_interrupted,
            )
        )


class Recovery:
    """Runs once per server start (Controller.start), before the work queues."""

    def __init__(self, recorder: Recorder, agent: AgentAPI) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent

    def __repr__(self) -> str:
        return "Recovery()"

    async def run(self) -> RecoveryReport:
        """Settle every unfinished snapshot, restore point and operation; say what was done."""
        report = RecoveryReport()
        for phase in (self._snapshots, self._backups):
            try:
                await phase(report)
            except Exception:  # the server must start even if one thing cannot be settled
                log.exception("recovery of unfinished work failed in %s", phase.__name__)
        try:
            self._interrupt_operations(report)
        except Exception:
            log.exception("recovery could not settle the unfinished operations")
        if report:
            log.warning(
                "recovered after a restart: snapshots kept %s, rolled back %s; backups rolled "
                "back %s; operations interrupted %s",
                report.snapshots_kept,
                report.snapshots_rolled_back,
                report.backups_rolled_back,
                report.operations_interrupted,
            )
        return report

    def _finish_create(
        self, instance: str, snapshot: str, error: OperationError | None, message: str
    ) -> None:
        """Finish the running snapshot-create operations of `snapshot`."""
        with self._db.transaction() as session:
            running = operation_store.running_operations(session, "instance", instance)
        for record in running:
            op = record.operation
            if op.kind == SNAPSHOT_CREATE and record.params.get("snapshot") == snapshot:
                self._recorder.finish(
                    record.operation.id, error=error, message=error.message if error else message
                )

    # -- snapshots ---------------------------------------------------------------------------
    async def _snapshots(self, report: RecoveryReport) -> None:
        with self._db.transaction() as session:
            pending = snapshot_store.snapshots_in_state(session, SnapshotState.PENDING)
        for record in pending:
            await self._settle_snapshot(record, report)

    async def _settle_snapshot(self, record: SnapshotRecord, report: RecoveryReport) -> None:
        snapshot = record.snapshot
        instance, name = snapshot.instance, snapshot.name
        with self._db.transaction() as session:
            found = instance_store.find_instance(session, instance)
            disks, _missing = snapshot_attachments(
                session, found.instance if found else None, snapshot.volumes
            )
        if found is None:
            with self._db.transaction() as session:
                snapshot_store.remove_snapshot(session, instance, name)
            return
        request = SnapshotRequest(instance=instance, tag=record.tag, disks=disks)
        complete = False
        if disks:
            try:
                tags = await self._agent.snapshot_tags(request)
                complete = snapshot_complete(tags, [d.id for d in disks], record.tag)
            except CorralError as err:
                log.warning("cannot read the snapshots of %s: %s", instance, err.message)
        label = f"{instance}/{name}"
        if complete:
            with self._db.transaction() as session:
                ready = snapshot_store.mark_snapshot_ready(
                    session, instance, name, quiesced=False, duration_ms=0.0
                )
            snapshot_event(self._recorder, "snapshot.state", ready)
            message = f"snapshot {name} of {instance} was complete when the server restarted"
            self._finish_create(instance, name, None, message)
            report.snapshots_kept.append(label)
            return
        if disks:
            try:
                await self._agent.snapshot_delete(request)
            except CorralError as err:
                log.warning("snapshot %s may have left tags: %s", label, err.message)
        message = (
            f"the server stopped while snapshot {name} of {instance} was being taken; nothing "
            "of it was kept: take it again"
        )
        with self._db.transaction() as session:
            snapshot_store.mark_snapshot_failed(session, instance, name, message)
            failed = snapshot_store.get_snapshot(session, instance, name).snapshot
        snapshot_event(self._recorder, "snapshot.state", failed)
        error = OperationError(code=INTERRUPTED, message=message)
        self._finish_create(instance, name, error, "")
        report.snapshots_rolled_back.append(label)

    # -- backups -----------------------------------------------------------------------------
    async def _backups(self, report: RecoveryReport) -> None:
        with self._db.transaction() as session:
            pending = backup_store.backups_in_state(session, backup_store.PENDING)
        for record in pending:
            volume = record.point.volume
            with self._db.transaction() as session:
                found = volume_store.find_volume(session, volume)
            request = BackupRequest(
                instance=record.instance,
                disk=backup_disk(volume, found, record.disk_path),
                target_path=record.point.path,
            )
            try:
                await self._agent.abort_backup(request)
            except CorralError as err:
                log.warning("cannot abort backup %s of %s: %s", record.id, volume, err.message)
            reason = (
                f"backup {record.id} was cut short by a server restart, after which the dirty "
                "bitmap cannot be trusted; this backup starts a new chain"
            )
            with self._db.transaction() as session:
                backup_store.drop_backup(session, volume, record.id)
                backup_store.require_full(session, volume, reason)
            message = (
                f"the server stopped while backup {record.id} of volume {volume} was being "
                "written; it was removed: back up again"
            )
            if record.operation is not None:
                error = OperationError(code=INTERRUPTED, message=message)
                self._recorder.finish(record.operation, error=error, message=message)
            report.backups_rolled_back.append(f"{volume}/{record.id}")

    # -- operations --------------------------------------------------------------------------
    def _interrupt_operations(self, report: RecoveryReport) -> None:
        """Work that was asked for but never finished, and cannot be picked up again safely:
        reverts (the guest may be anywhere in between), and snapshots or backups whose
        work never started (they were rolled back above when it had)."""
        with self._db.transaction() as session:
            running = operation_store.all_running_operations(session, "instance")
            running += operation_store.all_running_operations(session, "volume")
        for record in running:
            op = record.operation
            if self._done_unseen(record):
                continue
            if op.kind == SNAPSHOT_REVERT:
                message = (
                    f"the server stopped while instance {op.target} was being reverted to "
                    f"snapshot {record.params.get('snapshot')}; its disks may or may not be "
                    "back at the snapshot: revert again"
                )
            elif op.kind == SNAPSHOT_CREATE:
                message = (
                    f"the server stopped before snapshot {record.params.get('snapshot')} of "
                    f"{op.target} was taken: take it again"
                )
            elif op.kind == BACKUP:
                message = (
                    f"the server stopped before the backup of volume {op.target} started: "
                    "back up again"
                )
            else:
                continue
            error = OperationError(code=INTERRUPTED, message=message)
            self._recorder.finish(op.id, error=error, message=message)
            report.operations_interrupted.append(op.id)

    def _done_unseen(self, record: OperationRecord) -> bool:
        """Finish an operation whose work was recorded done just before the server stopped
        (the record and the operation are written one after the other); True if it was."""
        op = record.operation
        with self._db.transaction() as session:
            if op.kind == SNAPSHOT_CREATE:
                name = str(record.params.get("snapshot", ""))
                found = snapshot_store.find_snapshot(session, op.target, name)
                if found is None or found.snapshot.state != SnapshotState.READY:
                    return False
                result = {"snapshot": found.snapshot.model_dump(mode="json")}
                message = f"snapshot {name} of {op.target} taken"
            elif op.kind == BACKUP:
                point = backup_store.point_of_operation(session, op.id)
                if point is None or point.state != backup_store.READY:
                    return False
                result = {"backup": point.point.model_dump(mode="json")}
                message = f"backup {point.id} of volume {op.target}: {point.point.kind.value}"
            else:
                return False
        self._recorder.finish(op.id, message=message, result=result)
        return True
