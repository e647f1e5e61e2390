"""reconcile(volume): create it on the host, grow it, keep its facts fresh, delete it.

A creation is all or nothing on the host (the agent's promise); here it is recorded as the
volume's status: ready with the agent's facts, or failed with the agent's code (pool_full,
...) so its operation fails with that code and the user can delete the record. A pass that
crashed after the agent made the volume is finished by the next one: it finds the volume
on the host (volume_facts) and adopts it instead of making it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from corral.bus.agent_link import AgentAPI
from corral.controller.backup_plan import BACKUP_DELETE, BACKUP_KINDS
from corral.controller.disks import disk_id
from corral.controller.recorder import Recorder
from corral.controller.storage_plan import VolumeAction, plan_volume, wanted_size
from corral.errors import Conflict, CorralError, NotFound, TemporaryError
from corral.model.image import ImageState
from corral.model.operation import OperationError
from corral.model.rpc import GuestRunState, VolumeFacts, VolumeRequest
from corral.model.storage import PoolState, Volume, VolumeFormat, VolumeSourceKind, VolumeState
from corral.store import images as image_store
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.operations import OperationRecord
from corral.store.volumes import VolumeRecord

log = logging.getLogger(__name__)

TARGET_KIND = "volume"
_WAIT_S = 0.5
# Operations on a volume that a reconcile pass does not conclude: its deletion (concluded
# when the row goes) and backup work (the backup runner's, in the same queue).
_NOT_CONCLUDED = ("volume-delete", *BACKUP_KINDS)


class VolumeFailed(CorralError):
    """The volume cannot be made or grown; `code` is what its operation fails with."""


def _apply_facts(volume: Volume, facts: VolumeFacts) -> Volume:
    status = volume.status.model_copy(
        update={
            "state": VolumeState.READY,
            "path": facts.path,
            "format": VolumeFormat(facts.format),
            "virtual_size_bytes": facts.virtual_size_bytes,
            "allocated_bytes": facts.allocated_bytes,
            "backing": facts.backing,
            "message": "",
        }
    )
    return volume.model_copy(update={"status": status})


class VolumeReconciler:
    """Drives one volume at a time (its work queue keeps it to one pass per volume)."""

    def __init__(
        self,
        recorder: Recorder,
        agent: AgentAPI,
        *,
        enqueue_pool: Callable[[str], None],
        enqueue_instance: Callable[[str], None],
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._enqueue_pool = enqueue_pool
        self._enqueue_instance = enqueue_instance

    def __repr__(self) -> str:
        return "VolumeReconciler()"

    async def reconcile(self, name: str) -> None:
        """One pass over volume `name` (the work queue's handler)."""
        with self._db.transaction() as session:
            record = volume_store.find_volume(session, name)
            operations = operation_store.running_operations(session, TARGET_KIND, name)
        if record is None:
            return
        volume = record.volume
        action = plan_volume(
            volume.spec, volume.status, generation=volume.generation, deleting=record.deleting
        )
        if action == VolumeAction.DELETE:
            await self._delete(record, operations)
            return
        before = volume.status
        failure: OperationError | None = record.failure
        error: OperationError | None = None
        try:
            if action == VolumeAction.CREATE:
                volume = await self._create(record, operations)
                failure = None
            elif action == VolumeAction.RESIZE:
                volume = await self._resize(record, operations)
            elif action == VolumeAction.REFRESH:
                volume = await self._refresh(volume)
        except VolumeFailed as err:
            error = OperationError(code=err.code, message=err.message)
            # A failed creation, or a volume gone from the host, is failed; a failed resize
            # leaves a volume that still works at its old size.
            broken = action in (VolumeAction.CREATE, VolumeAction.REFRESH)
            state = VolumeState.FAILED if broken else volume.status.state
            status = volume.status.model_copy(update={"state": state, "message": err.message})
            volume = volume.model_copy(update={"status": status})
            if broken:
                failure = error
            log.warning("volume %s: %s", name, err.message)
        volume.status.observed_generation = volume.generation
        stored = self._recorder.write_volume_status(
            name, volume.status, before, volume.generation, failure=failure
        )
        if not stored and action == VolumeAction.CREATE and error is None:
            # Deleted while it was being made (its instance went): leave nothing behind.
            await self._agent.delete_volume(volume.spec.pool, name)
            return
        if (before.state, before.virtual_size_bytes, before.allocated_bytes) != (
            volume.status.state,
            volume.status.virtual_size_bytes,
            volume.status.allocated_bytes,
        ):
            self._enqueue_pool(volume.spec.pool)  # its usage figures changed
        if before.state != volume.status.state and record.instance is not None:
            self._enqueue_instance(record.instance)
        self._conclude(volume, operations, error)

    def _conclude(
        self, volume: Volume, operations: list[OperationRecord], error: OperationError | None
    ) -> None:
        for record in operations:
            op = record.operation
            wanted = int(record.params.get("generation", 0))
            if op.kind in _NOT_CONCLUDED or wanted > volume.generation:
                continue
            message = f"volume {volume.name} is {volume.status.state.value}"
            if volume.status.state == VolumeState.READY:
                message += f" ({volume.status.virtual_size_bytes} bytes)"
            self._recorder.finish(op.id, error=error, message=error.message if error else message)

    def _progress(self, operations: list[OperationRecord], progress: float, message: str) -> None:
        self._recorder.progress([r.operation.id for r in operations], progress, message)

    # -- create ------------------------------------------------------------------------------
    def _request(self, volume: Volume, restore_source: str | None) -> VolumeRequest:
        spec = volume.spec
        source = spec.source
        request = VolumeRequest(
            pool=spec.pool, name=volume.name, size_bytes=spec.size_bytes, format=spec.format.value
        )
        if restore_source is not None:
            # A restore: a full copy of a backup point's file (and the chain under it).
            request.source_path = restore_source
            request.full_copy = True
        with self._db.transaction() as session:
            pool = pool_store.find_pool(session, spec.pool)
            image = image_store.find_image(session, source.image) if source.image else None
            origin = volume_store.find_volume(session, source.volume) if source.volume else None
            snapshot = (
                snapshot_store.snapshot_of_volume(session, source.volume, source.snapshot)
                if source.volume and source.snapshot
                else None
            )
        if pool is None or pool.status.state in (PoolState.DELETING, PoolState.FAILED):
            state = "gone" if pool is None else pool.status.state.value
            raise VolumeFailed(f"pool {spec.pool!r} is {state}", code="unknown_pool")
        if pool.status.state != PoolState.READY:
            raise TemporaryError(f"waiting for pool {spec.pool!r} to be ready", delay=_WAIT_S)
        if restore_source is not None:
            return request
        if source.kind == VolumeSourceKind.IMAGE:
            if image is None or image.state != ImageState.READY or not image.disk:
                raise VolumeFailed(
                    f"image {source.image!r} is not a ready disk image", code="unknown_image"
                )
            return request.model_copy(update={"source_path": image.disk})
        kinds = (VolumeSourceKind.VOLUME, VolumeSourceKind.COPY, VolumeSourceKind.SNAPSHOT)
        if source.kind in kinds:
            if (
                origin is None
                or origin.deleting
                or origin.volume.status.state == VolumeState.FAILED
            ):
                raise VolumeFailed(
                    f"source volume {source.volume!r} does not exist", code="unknown_volume"
                )
            if origin.volume.status.state != VolumeState.READY:
                raise TemporaryError(
                    f"waiting for source volume {source.volume!r} to be ready", delay=_WAIT_S
                )
            if source.kind == VolumeSourceKind.SNAPSHOT:
                if snapshot is None:
                    raise VolumeFailed(
                        f"volume {source.volume!r} has no ready snapshot {source.snapshot!r} "
                        "any more",
                        code="unknown_snapshot",
                    )
                return request.model_copy(
                    update={
                        "source_volume": source.volume,
                        "source_snapshot_tag": snapshot.tag,
                        "full_copy": True,
                    }
                )
            return request.model_copy(
                update={
                    "source_volume": source.volume,
                    "full_copy": source.kind == VolumeSourceKind.COPY,
                }
            )
        return request

    async def _create(self, record: VolumeRecord, operations: list[OperationRecord]) -> Volume:
        volume = record.volume
        try:
            facts = await self._agent.volume_facts(volume.spec.pool, volume.name)
        except NotFound:
            pass  # the usual case: it does not exist yet
        except TemporaryError:
            raise
        except CorralError as err:
            raise TemporaryError(f"could not look up volume {volume.name!r}: {err}") from err
        else:
            log.info("volume %s already exists on the host; adopting it", volume.name)
            return _apply_facts(volume, facts)
        request = self._request(volume, record.restore_source)
        self._progress(operations, 0.2, f"creating volume {volume.name} in {request.pool}")
        try:
            facts = await self._agent.create_volume(request)
        except TemporaryError:
            raise
        except CorralError as err:
            raise VolumeFailed(
                f"volume {volume.name!r} could not be created: {err.message}", code=err.code
            ) from err
        return _apply_facts(volume, facts)

    # -- resize ------------------------------------------------------------------------------
    async def _resize(self, record: VolumeRecord, operations: list[OperationRecord]) -> Volume:
        volume = record.volume
        size = wanted_size(volume.spec, volume.status)
        if size is None:
            return volume
        instance = volume.status.attached_to
        online = False
        if instance is not None:
            seen = await self._agent.observe(instance)
            online = seen.state in (GuestRunState.RUNNING, GuestRunState.PAUSED)
        where = f"online in {instance}" if online else "offline"
        self._progress(operations, 0.3, f"growing volume {volume.name} to {size} bytes ({where})")
        try:
            if online and instance is not None:
                await self._agent.resize_disk(instance, disk_id(volume.name), size)
                facts = await self._agent.volume_facts(volume.spec.pool, volume.name)
                # QEMU has grown the image by now; the guest's view is what was asked for.
                size_now = max(facts.virtual_size_bytes, size)
                facts = facts.model_copy(update={"virtual_size_bytes": size_now})
            else:
                facts = await self._agent.resize_volume(volume.spec.pool, volume.name, size)
        except TemporaryError:
            raise
        except Conflict as err:
            # e.g. attached while we looked: the next pass sees where it is now
            raise TemporaryError(f"volume {volume.name!r} is busy: {err.message}") from err
        except CorralError as err:
            raise VolumeFailed(
                f"volume {volume.name!r} could not grow to {size} bytes: {err.message}",
                code=err.code,
            ) from err
        return _apply_facts(volume, facts)

    # -- refresh -----------------------------------------------------------------------------
    async def _refresh(self, volume: Volume) -> Volume:
        try:
            facts = await self._agent.volume_facts(volume.spec.pool, volume.name)
        except NotFound as err:
            raise VolumeFailed(
                f"volume {volume.name!r} is gone from pool {volume.spec.pool!r} on the host",
                code="not_found",
            ) from err
        except TemporaryError:
            raise
        except CorralError as err:
            raise TemporaryError(f"could not read volume {volume.name!r}: {err}") from err
        return _apply_facts(volume, facts)

    # -- delete ------------------------------------------------------------------------------
    async def _delete(self, record: VolumeRecord, operations: list[OperationRecord]) -> None:
        volume = record.volume
        name = volume.name
        self._progress(operations, 0.3, f"removing volume {name}")
        try:
            await self._agent.delete_volume(volume.spec.pool, name)
        except NotFound:
            pass
        except TemporaryError:
            raise
        except Conflict as err:
            with self._db.transaction() as session:
                volume_store.unmark_volume_deleting(session, name)
            error = OperationError(
                code="volume_in_use", message=f"volume {name!r} was not deleted: {err.message}"
            )
            for op_record in operations:
                if op_record.operation.kind == "volume-delete":
                    self._recorder.finish(op_record.operation.id, error=error)
            return
        except CorralError as err:
            raise TemporaryError(f"volume {name!r} could not be removed: {err.message}") from err
        with self._db.transaction() as session:
            volume_store.delete_volume_record(session, name)
        self._recorder.publish("volume.deleted", "volume", name, {"uid": volume.uid})
        for op_record in operations:
            op = op_record.operation
            if op.kind == BACKUP_DELETE:
                continue  # restore points outlive their volume; the backup runner goes on
            if op.kind == "volume-delete":
                self._recorder.finish(op.id, message=f"volume {name} is deleted")
            else:
                error = OperationError(
                    code="invalid_state",
                    message=f"volume {name!r} was deleted before this {op.kind} finished",
                )
                self._recorder.finish(op.id, error=error)
        self._enqueue_pool(volume.spec.pool)
        log.info("volume %s deleted", name)
