"""An instance's disks during its reconcile: what to launch with, hot-plug, release, record.

The volumes' own lifecycle (create, resize, delete) is the volume reconciler's; this room
only turns volumes into guest disks and keeps `volume.status.attached_to` true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from corral.bus.agent_link import AgentAPI
from corral.controller.disks import attachment_changes, disk_id, disk_serial
from corral.controller.recorder import Recorder, volume_event_data
from corral.controller.run import ReconcileRun
from corral.errors import CorralError, NotFound, TemporaryError
from corral.model.operation import OperationError
from corral.model.rpc import DiskAttachment
from corral.model.storage import InstanceDisk, Volume, VolumeState
from corral.store import volumes as volume_store
from corral.store.volumes import VolumeRecord

log = logging.getLogger(__name__)

VOLUME_WAIT_S = 0.5


class DiskProblem(CorralError):
    """A disk of the instance cannot be used (missing, failed, refused by the agent):
    retrying will not help until the spec changes. `reason` goes into the condition."""

    http_status = 409

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(message, code=code)
        self.reason = reason


@dataclass(frozen=True)
class StorageHooks:
    """What the disk steps ask other queues to do (the Controller wires them)."""

    enqueue_pool: Callable[[str], None]  # its usage changed (a volume went with its instance)


def _usable(record: VolumeRecord | None, volume: str, instance: str) -> VolumeRecord:
    """The volume, ready to be a disk; TemporaryError while it is being made."""
    if record is None or record.deleting:
        raise DiskProblem(
            "unknown_volume",
            "VolumeMissing",
            f"volume {volume!r} of instance {instance!r} does not exist (any more); remove it "
            "from spec.disks",
        )
    state = record.volume.status.state
    if state == VolumeState.PENDING:
        raise TemporaryError(f"waiting for volume {volume!r} to be created", delay=VOLUME_WAIT_S)
    if state == VolumeState.FAILED:
        failure = record.failure
        detail = failure.message if failure else record.volume.status.message
        raise DiskProblem(
            failure.code if failure else "invalid_state",
            "VolumeFailed",
            f"volume {volume!r} of instance {instance!r} failed: {detail}",
        )
    return record


def volume_attachment(volume: Volume, *, read_only: bool, boot: bool) -> DiskAttachment:
    """`volume` as a guest disk: its stable device id and serial, its file and format."""
    return DiskAttachment(
        id=disk_id(volume.name),
        path=volume.status.path or "",
        format=(volume.status.format or volume.spec.format).value,
        read_only=read_only,
        boot=boot,
        serial=disk_serial(volume.name),
    )


def _attachment(record: VolumeRecord, disk: InstanceDisk, *, boot: bool) -> DiskAttachment:
    return volume_attachment(record.volume, read_only=disk.read_only, boot=boot)


class DiskSteps:
    """Disk work of the instance reconciler."""

    def __init__(self, recorder: Recorder, agent: AgentAPI, hooks: StorageHooks) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._hooks = hooks

    def __repr__(self) -> str:
        return "DiskSteps()"

    def launch_disks(self, run: ReconcileRun) -> list[DiskAttachment]:
        """The disks to launch the guest with, in spec order.

        TemporaryError while one is still being created; DiskProblem when one is unusable.
        """
        disks = run.spec.disks
        with self._db.transaction() as session:
            records = volume_store.find_volumes(session, [d.volume for d in disks])
        attachments = []
        for disk in disks:
            record = _usable(records.get(disk.volume), disk.volume, run.name)
            elsewhere = record.volume.status.attached_to
            if elsewhere not in (None, run.name):
                raise TemporaryError(
                    f"volume {disk.volume!r} is still attached to {elsewhere!r}",
                    delay=VOLUME_WAIT_S,
                )
            attachments.append(_attachment(record, disk, boot=disk.boot))
        return attachments

    async def attach(self, run: ReconcileRun, volume: str) -> None:
        """Hot-plug `volume` into the running guest."""
        disk = next(d for d in run.spec.disks if d.volume == volume)
        with self._db.transaction() as session:
            record = _usable(volume_store.find_volume(session, volume), volume, run.name)
        elsewhere = record.volume.status.attached_to
        if elsewhere not in (None, run.name):
            raise TemporaryError(
                f"volume {volume!r} is still attached to {elsewhere!r}", delay=VOLUME_WAIT_S
            )
        attachment = _attachment(record, disk, boot=False)
        try:
            await self._agent.attach_disk(run.name, attachment)
        except TemporaryError:
            raise
        except CorralError as err:
            raise DiskProblem(
                "hotplug_failed",
                "HotplugFailed",
                f"volume {volume!r} could not be attached to {run.name!r}: {err.message}",
            ) from err
        if run.guest_disks is not None:
            run.guest_disks.add(attachment.id)
        log.info("attached volume %s to %s as %s", volume, run.name, attachment.id)

    async def detach(self, run: ReconcileRun, device: str) -> None:
        """Hot-unplug a disk from the running guest."""
        try:
            await self._agent.detach_disk(run.name, device)
        except TemporaryError:
            raise
        except CorralError as err:
            raise DiskProblem(
                "hotplug_failed",
                "HotplugFailed",
                f"disk {device!r} could not be detached from {run.name!r}: {err.message}",
            ) from err
        if run.guest_disks is not None:
            run.guest_disks.discard(device)
        log.info("detached disk %s from %s", device, run.name)

    def record_attachments(self, run: ReconcileRun) -> None:
        """Make the volumes' `attached_to` say what this pass left (see attachment_changes)."""
        with self._db.transaction() as session:
            records = volume_store.volumes_of_instance(session, run.name)
        recorded = {r.name: r.volume.status.attached_to for r in records}
        existing = {r.name for r in records} | set(recorded)
        claimed = [d.volume for d in run.spec.disks if d.volume in existing]
        changes = attachment_changes(run.name, claimed, recorded, run.guest_disks)
        if not changes:
            return
        with self._db.transaction() as session:
            for volume, instance in changes.items():
                volume_store.set_attached_to(session, volume, instance)
            changed = volume_store.find_volumes(session, list(changes))
        for name, record in changed.items():
            data = volume_event_data(record.volume.status, record.volume.generation)
            self._recorder.publish("volume.state", "volume", name, data)

    async def release(self, run: ReconcileRun) -> None:
        """The instance is being deleted (its guest is gone): delete the volumes it owns,
        detach (in the records) the others."""
        with self._db.transaction() as session:
            records = volume_store.volumes_of_instance(session, run.name)
        owned = [r for r in records if r.volume.status.owner == run.name]
        deleted: list[VolumeRecord] = []
        kept: list[str] = []
        for record in owned:
            pool = record.volume.spec.pool
            try:
                await self._agent.delete_volume(pool, record.name)
            except TemporaryError:
                raise
            except NotFound:
                pass
            except CorralError as err:
                log.warning(
                    "volume %s of deleted instance %s stays (%s); it is an ordinary volume now",
                    record.name,
                    run.name,
                    err.message,
                )
                kept.append(record.name)
                continue
            deleted.append(record)
        with self._db.transaction() as session:
            volume_store.release_instance(session, run.name)
            for name in kept:
                volume_store.disown(session, name)
            for record in deleted:
                volume_store.delete_volume_record(session, record.name)
        gone = OperationError(
            code="invalid_state",
            message="the volume was deleted with the instance that owned it",
        )
        for record in deleted:
            self._recorder.finish_all("volume", record.name, gone, "")
            self._recorder.publish(
                "volume.deleted", "volume", record.name, {"uid": record.volume.uid}
            )
            self._hooks.enqueue_pool(record.volume.spec.pool)
        for record in records:
            if record not in deleted and record.volume.status.attached_to == run.name:
                status = record.volume.status.model_copy(update={"attached_to": None})
                data = volume_event_data(status, record.volume.generation)
                self._recorder.publish("volume.state", "volume", record.name, data)
