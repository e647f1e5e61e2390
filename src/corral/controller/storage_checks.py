"""Checks at the API's door for volumes and disks: what only the store can tell.

The model already refused malformed names, sizes and paths (422 with the field); these
functions check the request against what exists: the pool, the source image or volume,
sizes against sources and pools, and who a volume is attached to. Each raises the
CorralError a client gets as problem+json, naming the request field at fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from corral.errors import Conflict, InvalidInput
from corral.model.image import Image, ImageState
from corral.model.instance import PowerState
from corral.model.sizes import format_size
from corral.model.storage import InstanceDisk, PoolState, VolumeSourceKind, VolumeSpec, VolumeState
from corral.store import images as image_store
from corral.store import instances as instance_store
from corral.store import pools as pool_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.volumes import VolumeRecord

SHRINK_REFUSED = "shrink_refused"
DISK_IMAGE_KIND = "disk"


@dataclass(frozen=True)
class VolumeFields:
    """Where each volume field sits in the request (a root disk names them differently)."""

    name: str = "name"
    pool: str = "spec.pool"
    size: str = "spec.size_bytes"
    image: str = "spec.source.image"
    volume: str = "spec.source.volume"
    snapshot: str = "spec.source.snapshot"


ROOT_DISK_FIELDS = VolumeFields(
    name="name", pool="root_disk.pool", size="root_disk.size_bytes", image="spec.image"
)


def _size(n_bytes: int) -> str:
    return f"{format_size(n_bytes)} ({n_bytes} bytes)"


def check_disk_image(image: Image | None, name: str, field: str) -> Image:
    """The image, if it is a ready disk image; else the error for `field`."""
    if image is None:
        raise InvalidInput(
            f"image {name!r} does not exist; `corral image list` shows the images",
            code="unknown_image",
            field=field,
        )
    if image.state != ImageState.READY:
        raise Conflict(
            f"image {name!r} is {image.state.value}, not ready; wait for its build to finish",
            code="image_not_ready",
            field=field,
        )
    if image.kind != DISK_IMAGE_KIND or not image.disk:
        raise InvalidInput(
            f"image {name!r} is an {image.kind} image, not a disk image; volumes can only be "
            "made from disk images (like debian-12)",
            code="not_a_disk_image",
            field=field,
        )
    return image


def refuse_shrink(size: int | None, minimum: int, what: str, field: str) -> None:
    """InvalidInput(shrink_refused) when `size` is smaller than `minimum`."""
    if size is not None and size < minimum:
        raise InvalidInput(
            f"{_size(size)} is smaller than {what} ({_size(minimum)}); volumes never shrink: "
            f"ask for at least {minimum} bytes",
            code=SHRINK_REFUSED,
            field=field,
        )


def _running(session: Session, instance: str | None) -> bool:
    if instance is None:
        return False
    record = instance_store.find_instance(session, instance)
    return record is not None and record.instance.spec.power == PowerState.RUNNING


def check_new_volume(
    session: Session, name: str, spec: VolumeSpec, fields: VolumeFields = VolumeFields()
) -> None:
    """Refuse a new volume whose name, pool, source or size does not fit what exists."""
    if volume_store.find_volume(session, name) is not None:
        raise Conflict(
            f"volume {name!r} already exists; choose another name or delete it first",
            code="already_exists",
            field=fields.name,
        )
    pool = pool_store.find_pool(session, spec.pool)
    if pool is None:
        raise InvalidInput(
            f"pool {spec.pool!r} does not exist; `corral pool list` shows the pools",
            code="unknown_pool",
            field=fields.pool,
        )
    if pool.status.state in (PoolState.FAILED, PoolState.DELETING):
        raise Conflict(
            f"pool {spec.pool!r} is {pool.status.state.value}; use another pool",
            code="invalid_state",
            field=fields.pool,
        )
    source = spec.source
    minimum = 0
    if source.kind == VolumeSourceKind.IMAGE and source.image is not None:
        image = check_disk_image(
            image_store.find_image(session, source.image), source.image, fields.image
        )
        minimum = image.disk_virtual_size_bytes
        refuse_shrink(spec.size_bytes, minimum, f"image {source.image!r}", fields.size)
    elif source.volume is not None:
        origin = check_source_volume(session, source.volume, source.kind, spec.pool, fields)
        if source.kind == VolumeSourceKind.SNAPSHOT and source.snapshot is not None:
            check_source_snapshot(session, source.volume, source.snapshot, fields.snapshot)
        minimum = max(origin.volume.status.virtual_size_bytes, origin.volume.spec.size_bytes or 0)
        refuse_shrink(spec.size_bytes, minimum, f"volume {source.volume!r}", fields.size)
    size = spec.size_bytes or minimum
    if pool.status.capacity_bytes and size > pool.status.capacity_bytes:
        raise Conflict(
            f"a volume of {_size(size)} does not fit in pool {spec.pool!r}, which holds "
            f"{_size(pool.status.capacity_bytes)}; ask for less or use a bigger pool",
            code="insufficient_capacity",
            field=fields.size,
        )


def check_source_volume(
    session: Session, name: str, kind: VolumeSourceKind, pool: str, fields: VolumeFields
) -> VolumeRecord:
    """The source of a clone or copy, if it can be one."""
    origin = volume_store.find_volume(session, name)
    if origin is None or origin.deleting:
        raise InvalidInput(
            f"volume {name!r} does not exist; `corral volume list` shows the volumes",
            code="unknown_volume",
            field=fields.volume,
        )
    if origin.volume.spec.pool != pool:
        raise InvalidInput(
            f"a clone or copy is made in the pool of its source: volume {name!r} is in pool "
            f"{origin.volume.spec.pool!r}",
            code="invalid_input",
            field=fields.pool,
        )
    if origin.volume.status.state == VolumeState.FAILED:
        raise Conflict(
            f"volume {name!r} failed; it cannot be a source",
            code="invalid_state",
            field=fields.volume,
        )
    if kind == VolumeSourceKind.SNAPSHOT:
        return origin  # an internal snapshot never changes: the disk may be in use
    user = origin.instance or origin.volume.status.attached_to
    # A thin clone shares the source's blocks: the source must never change again, so it
    # may not be attached at all. A copy only needs the source to be still while copied.
    if user is not None and (kind == VolumeSourceKind.VOLUME or _running(session, user)):
        raise Conflict(
            f"volume {name!r} is attached to instance {user!r}; detach it (or stop the "
            "instance, for a copy) first",
            code="volume_attached",
            field=fields.volume,
        )
    return origin


def check_source_snapshot(session: Session, volume: str, snapshot: str, field: str) -> str:
    """The tag of ready snapshot `snapshot` on `volume`; InvalidInput `unknown_snapshot`."""
    record = snapshot_store.snapshot_of_volume(session, volume, snapshot)
    if record is None:
        raise InvalidInput(
            f"volume {volume!r} has no ready snapshot {snapshot!r}; `corral snapshot list "
            "INSTANCE` shows the snapshots of the instance it belongs to",
            code="unknown_snapshot",
            field=field,
        )
    return record.tag


def check_instance_disks(
    session: Session, instance: str, disks: Iterable[InstanceDisk], field: str = "spec.disks"
) -> None:
    """Refuse disks that do not exist, failed, or belong to another instance."""
    wanted = list(disks)
    records = volume_store.find_volumes(session, [d.volume for d in wanted])
    for disk in wanted:
        record = records.get(disk.volume)
        if record is None:
            raise InvalidInput(
                f"volume {disk.volume!r} does not exist; create it first (`corral volume "
                "create`) or pick one from `corral volume list`",
                code="unknown_volume",
                field=field,
            )
        volume = record.volume
        if record.deleting or volume.status.state == VolumeState.FAILED:
            state = "being deleted" if record.deleting else "failed"
            raise Conflict(f"volume {disk.volume!r} is {state}", code="invalid_state", field=field)
        for other, how in (
            (record.instance, "attached to"),
            (volume.status.attached_to, "still attached to (being detached from)"),
            (volume.status.owner, "the root volume of"),
        ):
            if other is not None and other != instance:
                raise Conflict(
                    f"volume {disk.volume!r} is {how} instance {other!r}; a volume is "
                    "attached to one instance at a time",
                    code="volume_attached",
                    field=field,
                )
