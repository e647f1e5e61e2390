"""An instance's snapshots and its volumes: which disks a snapshot request names, events about
snapshots, and what deleting an instance does to its snapshots.

Shared by the snapshot service (checks at the API's door), the snapshot runner (the work, in
the instance's queue), the instance's delete step and the startup recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from corral.bus.agent_link import AgentAPI
from corral.controller.disk_steps import volume_attachment
from corral.controller.recorder import Recorder
from corral.controller.snapshot_plan import DiskFormat
from corral.errors import CorralError, TemporaryError
from corral.model.instance import Instance
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import SnapshotRequest
from corral.model.snapshot import Snapshot
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store

log = logging.getLogger(__name__)


def disk_formats(session: Session, instance: Instance) -> list[DiskFormat]:
    """The instance's disks in device order, with each volume's format (as known so far)."""
    records = volume_store.find_volumes(session, [d.volume for d in instance.spec.disks])
    formats = []
    for disk in instance.spec.disks:
        record = records.get(disk.volume)
        volume = record.volume if record is not None else None
        fmt = (volume.status.format or volume.spec.format).value if volume else "missing"
        formats.append(DiskFormat(disk.volume, fmt, disk.read_only))
    return formats


def snapshot_attachments(
    session: Session, instance: Instance | None, volumes: Sequence[str]
) -> tuple[list[DiskAttachment], list[str]]:
    """The disks of `volumes` as the agent needs them (boot flags from the instance's spec),
    and the names of those that no longer exist."""
    records = volume_store.find_volumes(session, volumes)
    boot = {d.volume for d in instance.spec.disks if d.boot} if instance else set()
    disks, missing = [], []
    for name in volumes:
        record = records.get(name)
        if record is None or not record.volume.status.path:
            missing.append(name)
            continue
        disks.append(volume_attachment(record.volume, read_only=False, boot=name in boot))
    return disks, missing


def snapshot_event(recorder: Recorder, type_: str, snapshot: Snapshot, **extra: Any) -> None:
    """Publish `snapshot.<...>` about an instance (kind instance, name the instance)."""
    data = {
        "snapshot": snapshot.name,
        "state": snapshot.state.value,
        "current": snapshot.current,
        "parent": snapshot.parent,
        "memory": snapshot.memory,
        **extra,
    }
    recorder.publish(type_, "instance", snapshot.instance, data)


async def drop_instance_snapshots(recorder: Recorder, agent: AgentAPI, instance: Instance) -> None:
    """The instance is being deleted and its guest is gone: remove its snapshots' tags from
    the volumes that outlive it (its own volumes are deleted next) and drop the records.

    A volume the agent cannot clean keeps the tag (said in the log); it never blocks the
    deletion of the instance.
    """
    name = instance.name
    with recorder.db.transaction() as session:
        records = snapshot_store.list_snapshot_records(session, name)
        owned = {
            r.name for r in volume_store.volumes_of_instance(session, name)
            if r.volume.status.owner == name
        }  # fmt: skip
        attachments = {
            record.name: snapshot_attachments(
                session, instance, [v for v in record.snapshot.volumes if v not in owned]
            )[0]
            for record in records
        }
    for record in records:
        disks = attachments[record.name]
        if not disks:
            continue
        request = SnapshotRequest(instance=name, tag=record.tag, disks=disks)
        try:
            await agent.snapshot_delete(request)
        except TemporaryError:
            raise
        except CorralError as err:
            log.warning(
                "snapshot %s of deleted instance %s stays on volume(s) %s: %s",
                record.name,
                name,
                ", ".join(d.serial for d in disks),
                err.message,
            )
    with recorder.db.transaction() as session:
        snapshot_store.remove_instance_snapshots(session, name)
    for record in records:
        snapshot_event(recorder, "snapshot.deleted", record.snapshot)
