"""What the API asks of snapshots: list, show, take, revert to, delete.

Each command checks what the store can tell (the instance, its disks, the snapshot's state),
records the request (a pending snapshot, a snapshot flagged for deletion) with an Operation in
one transaction, and enqueues the instance: snapshot work runs in the instance's own queue,
one thing at a time with its lifecycle (controller/snapshot_runner.py does it).
"""

from __future__ import annotations

from collections.abc import Callable

from corral.controller.recorder import Recorder
from corral.controller.snapshot_disks import disk_formats, snapshot_event
from corral.controller.snapshot_plan import (
    NEEDS_QCOW2,
    SNAPSHOT_CREATE,
    SNAPSHOT_DELETE,
    SNAPSHOT_REVERT,
    revert_problem,
    snapshot_disk_problem,
    snapshot_volumes,
)
from corral.errors import Conflict, InvalidInput
from corral.model.instance import Instance, PowerState
from corral.model.operation import Operation
from corral.model.snapshot import Snapshot, SnapshotCreate, SnapshotState
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import snapshots as snapshot_store

TARGET_KIND = "instance"
Enqueue = Callable[[str, bool], None]


class SnapshotService:
    """Snapshots as the API sees them."""

    def __init__(self, recorder: Recorder, enqueue: Enqueue) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._enqueue = enqueue

    def __repr__(self) -> str:
        return "SnapshotService()"

    @staticmethod
    def _usable(instance: Instance, what: str) -> None:
        if instance.deleting:
            raise Conflict(
                f"instance {instance.name!r} is being deleted; {what} is not possible any more",
                code="invalid_state",
            )

    def list(self, instance: str) -> list[Snapshot]:
        """The instance's snapshots, oldest first; NotFound if the instance does not exist."""
        with self._db.transaction() as session:
            instance_store.get_instance(session, instance)
            return snapshot_store.list_snapshots(session, instance)

    def get(self, instance: str, name: str) -> Snapshot:
        """One snapshot; NotFound if the instance or the snapshot does not exist."""
        with self._db.transaction() as session:
            instance_store.get_instance(session, instance)
            return snapshot_store.get_snapshot(session, instance, name).snapshot

    def create(self, instance: str, body: SnapshotCreate) -> Operation:
        """Record a pending snapshot and start a `snapshot-create` operation."""
        with self._db.transaction() as session:
            target = instance_store.get_instance(session, instance).instance
            self._usable(target, "a snapshot")
            if body.memory and target.spec.power != PowerState.RUNNING:
                raise Conflict(
                    f"instance {instance!r} is stopped; a snapshot with memory needs a running "
                    f"guest (start it, or take a disk-only snapshot without --memory)",
                    code="invalid_state",
                    field="memory",
                )
            disks = disk_formats(session, target)
            problem = snapshot_disk_problem(instance, disks)
            if problem is not None:
                raise InvalidInput(problem, code=NEEDS_QCOW2)
            record = snapshot_store.create_snapshot(
                session, instance, body, snapshot_volumes(disks)
            )
            op = operation_store.create_operation(
                session,
                SNAPSHOT_CREATE,
                TARGET_KIND,
                instance,
                params={"snapshot": body.name},
                message=f"waiting to take snapshot {body.name}",
            )
        snapshot_event(self._recorder, "snapshot.created", record.snapshot)
        self._recorder.operation_created(op)
        self._enqueue(instance, False)
        return op

    def revert(self, instance: str, name: str) -> Operation:
        """Start a `snapshot-revert` operation (see controller/snapshot_plan.py for what it
        does to a running or stopped guest)."""
        with self._db.transaction() as session:
            target = instance_store.get_instance(session, instance).instance
            self._usable(target, "a revert")
            snapshot = snapshot_store.get_snapshot(session, instance, name).snapshot
            if snapshot.state != SnapshotState.READY:
                raise Conflict(
                    f"snapshot {name!r} of instance {instance!r} is {snapshot.state.value}; only "
                    "a ready snapshot can be reverted to",
                    code="invalid_state",
                )
            now = snapshot_volumes(disk_formats(session, target))
            problem = revert_problem(instance, name, snapshot.volumes, now, memory=snapshot.memory)
            if problem is not None:
                raise Conflict(problem, code="invalid_state")
            op = operation_store.create_operation(
                session,
                SNAPSHOT_REVERT,
                TARGET_KIND,
                instance,
                params={"snapshot": name},
                message=f"waiting to revert to snapshot {name}",
            )
        self._recorder.operation_created(op)
        self._enqueue(instance, False)
        return op

    def delete(self, instance: str, name: str) -> Operation:
        """Flag the snapshot for deletion and start a `snapshot-delete` operation; deleting one
        already being deleted returns the operation under way."""
        with self._db.transaction() as session:
            target = instance_store.get_instance(session, instance).instance
            self._usable(target, "deleting a snapshot")
            snapshot = snapshot_store.get_snapshot(session, instance, name).snapshot
            if snapshot.state == SnapshotState.DELETING:
                for record in operation_store.running_operations(session, TARGET_KIND, instance):
                    op = record.operation
                    if op.kind == SNAPSHOT_DELETE and record.params.get("snapshot") == name:
                        return op
            if snapshot.state == SnapshotState.PENDING:
                raise Conflict(
                    f"snapshot {name!r} of instance {instance!r} is still being taken; wait for "
                    "it, then delete it",
                    code="invalid_state",
                )
            deleting = snapshot_store.mark_snapshot_deleting(session, instance, name)
            op = operation_store.create_operation(
                session,
                SNAPSHOT_DELETE,
                TARGET_KIND,
                instance,
                params={"snapshot": name},
                message=f"waiting to delete snapshot {name}",
            )
        snapshot_event(self._recorder, "snapshot.state", deleting)
        self._recorder.operation_created(op)
        self._enqueue(instance, False)
        return op
