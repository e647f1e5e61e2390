"""Image records: a build starts one as `building`, then marks it ready (or failed)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import NotFound
from corral.model.image import Image, ImageState
from corral.model.rpc import ImageArtifact
from corral.store.schema import ImageRow
from corral.store.types import utcnow


def _to_model(row: ImageRow) -> Image:
    return Image(
        name=row.name,
        kind=row.kind,
        state=ImageState(row.state),
        size_bytes=row.size_bytes,
        digest=row.digest,
        recipe=row.recipe,
        kernel=row.kernel,
        initrd=row.initrd,
        cmdline=row.cmdline,
        disk=row.disk,
        disk_virtual_size_bytes=row.disk_virtual_size_bytes or 0,
        cloud_init=bool(row.cloud_init),
        build_seconds=row.build_seconds,
        created_at=row.created_at,
        message=row.message,
    )


def _not_found(name: str) -> NotFound:
    return NotFound(f"image {name!r} does not exist; `corral image list` shows the images")


def find_image(session: Session, name: str) -> Image | None:
    """The image called `name`, or None."""
    row = session.get(ImageRow, name)
    return _to_model(row) if row is not None else None


def get_image(session: Session, name: str) -> Image:
    """The image called `name`; NotFound if there is none."""
    image = find_image(session, name)
    if image is None:
        raise _not_found(name)
    return image


def list_images(session: Session) -> list[Image]:
    """Every image, by name."""
    return [_to_model(row) for row in session.scalars(select(ImageRow).order_by(ImageRow.name))]


def start_image_build(session: Session, name: str, recipe: str) -> Image:
    """Create (or replace a failed) record in state `building`."""
    now = utcnow()
    row = session.get(ImageRow, name)
    if row is None:
        row = ImageRow(name=name, created_at=now)
        session.add(row)
    row.state = ImageState.BUILDING.value
    row.kind = "initramfs"
    row.size_bytes = 0
    row.digest = ""
    row.recipe = {"name": recipe}
    row.kernel = None
    row.initrd = None
    row.cmdline = ""
    row.disk = None
    row.disk_virtual_size_bytes = 0
    row.cloud_init = False
    row.build_seconds = None
    row.message = f"building from recipe {recipe!r}"
    row.updated_at = now
    session.flush()
    return _to_model(row)


def mark_image_ready(session: Session, artifact: ImageArtifact) -> Image:
    """Record what the build produced."""
    row = session.get(ImageRow, artifact.name)
    if row is None:
        raise _not_found(artifact.name)
    row.state = ImageState.READY.value
    row.kind = artifact.kind
    row.size_bytes = artifact.size_bytes
    row.digest = artifact.digest
    row.recipe = dict(artifact.recipe)
    row.kernel = artifact.kernel
    row.initrd = artifact.initrd
    row.cmdline = artifact.cmdline
    row.disk = artifact.disk
    row.disk_virtual_size_bytes = artifact.disk_virtual_size_bytes
    row.cloud_init = artifact.cloud_init
    row.build_seconds = artifact.build_seconds
    row.message = ""
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def mark_image_failed(session: Session, name: str, message: str) -> Image:
    """Record why the build failed."""
    row = session.get(ImageRow, name)
    if row is None:
        raise _not_found(name)
    row.state = ImageState.FAILED.value
    row.message = message
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def fail_unfinished_builds(session: Session, message: str) -> list[str]:
    """Mark every `building` image failed (its build died with the server); return names."""
    rows = list(
        session.scalars(select(ImageRow).where(ImageRow.state == ImageState.BUILDING.value))
    )
    for row in rows:
        row.state = ImageState.FAILED.value
        row.message = message
        row.updated_at = utcnow()
    return [row.name for row in rows]


def delete_image_record(session: Session, name: str) -> None:
    """Remove the record (idempotent)."""
    row = session.get(ImageRow, name)
    if row is not None:
        session.delete(row)
