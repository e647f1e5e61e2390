"""What the API asks of volumes: create, list, show, grow, delete, attach, detach.

Each method checks what only the control plane can check (storage_checks), writes the
desired state and an Operation in one transaction, publishes, and enqueues the volume for its
reconciler. Attach and detach are changes of an instance's spec.disks (InstanceService).
"""

from __future__ import annotations

from collections.abc import Callable

from corral.controller.instance_service import InstanceService, parse_if_match
from corral.controller.recorder import Recorder
from corral.controller.storage_checks import SHRINK_REFUSED, check_new_volume
from corral.errors import Conflict, InvalidInput, PreconditionFailed
from corral.model.names import some_names
from corral.model.operation import Operation
from corral.model.storage import InstanceDisk, Volume, VolumeCreate, VolumeSpecPatch, VolumeState
from corral.store import operations as operation_store
from corral.store import volumes as volume_store
from corral.store.volumes import VolumeRecord

TARGET_KIND = "volume"


class VolumeService:
    """Volumes as the API sees them."""

    def __init__(
        self, recorder: Recorder, instances: InstanceService, enqueue: Callable[[str], None]
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._instances = instances
        self._enqueue = enqueue

    def __repr__(self) -> str:
        return "VolumeService()"

    def _record(self, name: str) -> VolumeRecord:
        with self._db.transaction() as session:
            return volume_store.get_volume(session, name)

    def create(self, body: VolumeCreate) -> Operation:
        """Record a new volume and start a `volume-create` operation."""
        with self._db.transaction() as session:
            check_new_volume(session, body.name, body.spec)
            volume = volume_store.create_volume(session, body.name, body.spec)
            op = operation_store.create_operation(
                session,
                "volume-create",
                TARGET_KIND,
                body.name,
                params={"generation": volume.generation},
                message="waiting for the controller",
            )
        self._recorder.publish(
            "volume.created",
            "volume",
            body.name,
            {"uid": volume.uid, "spec": body.spec.model_dump(mode="json")},
        )
        self._recorder.operation_created(op)
        self._enqueue(body.name)
        return op

    def list(self, pool: str | None = None) -> list[Volume]:
        """Every volume (of one pool), by name."""
        with self._db.transaction() as session:
            return volume_store.list_volumes(session, pool)

    def get(self, name: str) -> Volume:
        """One volume; NotFound if it does not exist."""
        return self._record(name).volume

    def resize(
        self, name: str, patch: VolumeSpecPatch, if_match: str | None
    ) -> tuple[Operation, Volume]:
        """Grow the volume (a `volume-resize` operation); shrinking is refused."""
        record = self._record(name)
        volume = record.volume
        expected = parse_if_match(if_match) if if_match else None
        if expected is not None and expected != volume.generation:
            raise PreconditionFailed(
                f'volume {name!r} changed since you read it (ETag now "{volume.generation}", '
                f'you sent "{expected}"); read it again and retry'
            )
        if record.deleting or volume.status.state != VolumeState.READY:
            state = "being deleted" if record.deleting else volume.status.state.value
            raise Conflict(
                f"volume {name!r} is {state}; only a ready volume can grow", code="invalid_state"
            )
        current = max(volume.spec.size_bytes or 0, volume.status.virtual_size_bytes)
        if patch.size_bytes < current:
            raise InvalidInput(
                f"volume {name!r} has {current} bytes; it cannot shrink to {patch.size_bytes} "
                "(shrinking would cut off the guest's data): ask for a size at least as big",
                code=SHRINK_REFUSED,
                field="spec.size_bytes",
            )
        if patch.size_bytes == current:
            op = self._recorder.finished_operation(
                "volume-resize", TARGET_KIND, name, f"volume {name} has {current} bytes already", {}
            )
            return op, volume
        spec = volume.spec.model_copy(update={"size_bytes": patch.size_bytes})
        with self._db.transaction() as session:
            changed = volume_store.update_volume_spec(
                session, name, spec, expected_generation=volume.generation
            )
            op = operation_store.create_operation(
                session,
                "volume-resize",
                TARGET_KIND,
                name,
                params={"generation": changed.generation},
                message=f"growing to {patch.size_bytes} bytes",
            )
        self._recorder.operation_created(op)
        self._enqueue(name)
        return op, changed

    def delete(self, name: str) -> Operation:
        """Delete a volume nothing uses; a second delete returns the first's operation."""
        with self._db.transaction() as session:
            record = volume_store.get_volume(session, name)
            for existing in operation_store.running_operations(session, TARGET_KIND, name):
                if existing.operation.kind == "volume-delete":
                    return existing.operation
            status = record.volume.status
            user = record.instance or status.attached_to
            if user is not None:
                raise Conflict(
                    f"volume {name!r} is attached to instance {user!r}; detach it first "
                    f"(`corral volume detach {name}`)",
                    code="volume_attached",
                )
            if status.owner is not None:
                raise Conflict(
                    f"volume {name!r} is the root volume of instance {status.owner!r}; it is "
                    "deleted with that instance",
                    code="volume_attached",
                )
            clones = volume_store.thin_clones_of(session, name)
            if clones:
                shown = some_names(clones)
                raise Conflict(
                    f"volume {name!r} is the source of thin clone(s) {shown}; delete them first",
                    code="volume_in_use",
                )
            volume_store.mark_volume_deleting(session, name)
            op = operation_store.create_operation(
                session, "volume-delete", TARGET_KIND, name, message="waiting for the controller"
            )
        self._recorder.operation_created(op)
        self._enqueue(name)
        return op

    def attach(self, name: str, instance: str, *, read_only: bool = False) -> Operation:
        """Add the volume to an instance's spec.disks (hot-plugged if it runs)."""
        record = self._record(name)
        claimed = record.instance
        if claimed == instance:
            return self._recorder.finished_operation(
                "update", "instance", instance, f"volume {name} is attached already", {}
            )
        target = self._instances.get(instance)
        disks = [*target.spec.disks, InstanceDisk(volume=name, read_only=read_only)]
        return self._instances.set_disks(instance, disks)

    def detach(self, name: str) -> Operation:
        """Remove the volume from the spec.disks of the instance that has it."""
        record = self._record(name)
        instance = record.instance
        if instance is None:
            return self._recorder.finished_operation(
                "update", TARGET_KIND, name, f"volume {name} is not attached", {}
            )
        target = self._instances.get(instance)
        disks = [d for d in target.spec.disks if d.volume != name]
        return self._instances.set_disks(instance, disks)
