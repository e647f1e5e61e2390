"""Writes that others must hear about: status, operations, events, always together.

Every change a client can wait for goes through here, so "stored" and "published" never
drift apart: the store first, then the bus (which records the event and fans it out).
"""

from __future__ import annotations

import logging
from typing import Any

from corral.bus.local import EventBus
from corral.errors import NotFound
from corral.model.instance import InstanceStatus
from corral.model.operation import Operation, OperationError
from corral.model.storage import PoolStatus, VolumeStatus
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import volumes as volume_store
from corral.store.database import Database

log = logging.getLogger(__name__)


def operation_document(op: Operation) -> dict[str, Any]:
    """An operation as API JSON."""
    return op.model_dump(mode="json")


def status_event_data(status: InstanceStatus, generation: int) -> dict[str, Any]:
    """The payload of an instance.state event: enough to follow a guest without a GET."""
    return {
        "state": status.state.value,
        "ready": status.ready,
        "pid": status.pid,
        "generation": generation,
        "observed_generation": status.observed_generation,
    }


def pool_event_data(status: PoolStatus) -> dict[str, Any]:
    """The payload of a pool.state event."""
    return {
        "state": status.state.value,
        "observed_generation": status.observed_generation,
        "capacity_bytes": status.capacity_bytes,
        "volumes": status.volumes,
        "message": status.message,
    }


def volume_event_data(status: VolumeStatus, generation: int) -> dict[str, Any]:
    """The payload of a volume.state event: enough to follow a volume without a GET."""
    return {
        "state": status.state.value,
        "generation": generation,
        "observed_generation": status.observed_generation,
        "virtual_size_bytes": status.virtual_size_bytes,
        "attached_to": status.attached_to,
        "message": status.message,
    }


class Recorder:
    """Store-then-publish for statuses (instances, pools, volumes) and operations."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    def __repr__(self) -> str:
        return f"Recorder({self.db!r})"

    def publish(self, type_: str, kind: str, name: str, data: dict[str, Any]) -> None:
        """Publish one event (stored by the bus's recorder)."""
        self.bus.publish(type_, kind, name, data)

    # -- instances ---------------------------------------------------------------------------
    def write_status(
        self, name: str, status: InstanceStatus, before: InstanceStatus, generation: int
    ) -> None:
        """Store a new status; publish instance.state when something a client follows changed."""
        with self.db.transaction() as session:
            instance_store.update_status(session, name, status)
        followed = ("state", "ready", "pid", "observed_generation")
        if any(getattr(status, f) != getattr(before, f) for f in followed):
            self.publish("instance.state", "instance", name, status_event_data(status, generation))

    # -- storage -----------------------------------------------------------------------------
    def write_pool_status(self, name: str, status: PoolStatus, before: PoolStatus) -> bool:
        """Store a pool's status (False if the pool is gone); publish pool.state when its
        state or message changed (usage figures change all the time and are not events)."""
        try:
            with self.db.transaction() as session:
                pool_store.update_pool_status(session, name, status)
        except NotFound:
            return False
        if (status.state, status.message) != (before.state, before.message):
            self.publish("pool.state", "pool", name, pool_event_data(status))
        return True

    def write_volume_status(
        self,
        name: str,
        status: VolumeStatus,
        before: VolumeStatus,
        generation: int,
        *,
        failure: OperationError | None = None,
    ) -> bool:
        """Store a volume's status (False if the volume is gone); publish volume.state when
        something a client follows changed."""
        try:
            with self.db.transaction() as session:
                volume_store.update_volume_status(session, name, status, failure=failure)
        except NotFound:
            return False
        followed = ("state", "observed_generation", "virtual_size_bytes", "attached_to")
        if any(getattr(status, f) != getattr(before, f) for f in followed):
            self.publish("volume.state", "volume", name, volume_event_data(status, generation))
        return True

    def finish_all(
        self, target_kind: str, target: str, error: OperationError | None, message: str
    ) -> None:
        """Finish every running operation on one object (it is gone, or done)."""
        with self.db.transaction() as session:
            running = operation_store.running_operations(session, target_kind, target)
        for record in running:
            self.finish(
                record.operation.id, error=error, message=error.message if error else message
            )

    # -- operations --------------------------------------------------------------------------
    def operation_created(self, op: Operation) -> None:
        """Announce a new operation (as operation.progress at its starting point)."""
        self.publish("operation.progress", "operation", op.id, operation_document(op))

    def progress(self, op_ids: list[str], progress: float, message: str) -> None:
        """Advance running operations and publish each change."""
        if not op_ids:
            return
        with self.db.transaction() as session:
            changed = [
                operation_store.update_operation(session, op_id, progress=progress, message=message)
                for op_id in op_ids
            ]
        for op in changed:
            self.publish("operation.progress", "operation", op.id, operation_document(op))

    def finish(
        self,
        op_id: str,
        *,
        error: OperationError | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Operation:
        """Finish an operation (failed when `error` is given) and publish operation.done."""
        with self.db.transaction() as session:
            op = operation_store.finish_operation(
                session, op_id, error=error, message=message, result=result
            )
        self.publish("operation.done", "operation", op.id, operation_document(op))
        if error is not None:
            log.info("operation %s (%s %s) failed: %s", op.id, op.kind, op.target, error.message)
        return op

    def finished_operation(
        self, kind: str, target_kind: str, target: str, message: str, result: dict[str, Any]
    ) -> Operation:
        """An operation with nothing left to do: created and finished at once."""
        with self.db.transaction() as session:
            op = operation_store.create_operation(session, kind, target_kind, target)
        self.operation_created(op)
        return self.finish(op.id, message=message, result=result)
