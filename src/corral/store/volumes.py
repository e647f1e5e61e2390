"""Volume records: create, read, change the size (optimistically), write status, claims.

Who writes what:
- the API: spec, generation, the deleting flag, and the *claim* (`instance`: the instance
  whose spec.disks lists the volume), in the same transaction as that instance's spec, so
  two requests can never attach one volume to two instances;
- the controller: status (with `attached_to`, the instance the volume is attached to now,
  mirrored into a column for queries) and `failure` (why the creation failed).
`owner` (the instance a root volume belongs to) is set at creation and shown in the status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from corral.errors import Conflict, NotFound, PreconditionFailed
from corral.model.operation import OperationError
from corral.model.storage import (
    Volume,
    VolumeSourceKind,
    VolumeSpec,
    VolumeState,
    VolumeStatus,
)
from corral.store.schema import VolumeRow
from corral.store.types import utcnow


@dataclass(frozen=True)
class VolumeRecord:
    """A volume plus what only the control plane needs to see."""

    volume: Volume
    instance: str | None = None  # the instance whose spec lists it (desired attachment)
    deleting: bool = False
    failure: OperationError | None = None  # why its creation failed, when it did
    restore_source: str | None = None  # a backup point's file it is (to be) made from

    @property
    def name(self) -> str:
        """The volume's name."""
        return self.volume.name


def _not_found(name: str) -> NotFound:
    return NotFound(f"volume {name!r} does not exist; `corral volume list` shows the volumes")


def _to_model(row: VolumeRow) -> Volume:
    status = VolumeStatus.model_validate(row.status)
    status.owner = row.owner
    status.attached_to = row.attached_to
    if row.deleting:
        status.state = VolumeState.DELETING
    return Volume(
        name=row.name,
        uid=row.uid,
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        spec=VolumeSpec.model_validate(row.spec),
        status=status,
    )


def _to_record(row: VolumeRow) -> VolumeRecord:
    failure = OperationError.model_validate(row.failure) if row.failure else None
    return VolumeRecord(_to_model(row), row.instance, row.deleting, failure, row.restore_source)


def _find_row(session: Session, name: str) -> VolumeRow | None:
    return session.scalars(select(VolumeRow).where(VolumeRow.name == name)).one_or_none()


def _row(session: Session, name: str) -> VolumeRow:
    row = _find_row(session, name)
    if row is None:
        raise _not_found(name)
    return row


def create_volume(
    session: Session,
    name: str,
    spec: VolumeSpec,
    *,
    owner: str | None = None,
    instance: str | None = None,
    restore_source: str | None = None,
) -> Volume:
    """Insert a new volume (state pending); Conflict(already_exists) if the name is taken.

    `owner` makes it an instance's own volume (deleted with it); `instance` claims it for
    that instance's spec at once (a root volume); `restore_source` makes it a full copy of
    that backup point's file.
    """
    if _find_row(session, name) is not None:
        raise Conflict(
            f"volume {name!r} already exists; choose another name or delete it first",
            code="already_exists",
            field="name",
        )
    source = spec.source
    now = utcnow()
    row = VolumeRow(
        name=name,
        uid=str(uuid.uuid4()),
        generation=1,
        deleting=False,
        pool=spec.pool,
        source_image=source.image if source.kind == VolumeSourceKind.IMAGE else None,
        source_volume=source.volume
        if source.kind
        in (VolumeSourceKind.VOLUME, VolumeSourceKind.COPY, VolumeSourceKind.SNAPSHOT)
        else None,
        thin_source=source.kind in (VolumeSourceKind.IMAGE, VolumeSourceKind.VOLUME),
        instance=instance,
        attached_to=None,
        owner=owner,
        failure=None,
        restore_source=restore_source,
        spec=spec.model_dump(mode="json"),
        status=VolumeStatus(owner=owner).model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_model(row)


def find_volume(session: Session, name: str) -> VolumeRecord | None:
    """The volume called `name`, or None."""
    row = _find_row(session, name)
    return _to_record(row) if row is not None else None


def get_volume(session: Session, name: str) -> VolumeRecord:
    """The volume called `name`; NotFound if there is none."""
    return _to_record(_row(session, name))


def find_volumes(session: Session, names: Iterable[str]) -> dict[str, VolumeRecord]:
    """The volumes among `names` that exist, by name."""
    wanted = list(names)
    if not wanted:
        return {}
    rows = session.scalars(select(VolumeRow).where(VolumeRow.name.in_(wanted)))
    return {row.name: _to_record(row) for row in rows}


def list_volumes(session: Session, pool: str | None = None) -> list[Volume]:
    """Every volume (of one pool, if given), by name."""
    query = select(VolumeRow).order_by(VolumeRow.name)
    if pool is not None:
        query = query.where(VolumeRow.pool == pool)
    return [_to_model(row) for row in session.scalars(query)]


def list_volume_records(session: Session) -> list[VolumeRecord]:
    """Every volume with its control-plane fields, by name (the resync's read)."""
    return [_to_record(row) for row in session.scalars(select(VolumeRow).order_by(VolumeRow.name))]


def list_volume_names(session: Session) -> list[str]:
    """Names of every volume."""
    return list(session.scalars(select(VolumeRow.name).order_by(VolumeRow.name)))


def update_volume_spec(
    session: Session, name: str, spec: VolumeSpec, *, expected_generation: int | None = None
) -> Volume:
    """Replace the spec and bump the generation; PreconditionFailed on a stale generation."""
    row = _row(session, name)
    if expected_generation is not None and row.generation != expected_generation:
        raise PreconditionFailed(
            f"volume {name!r} changed (now generation {row.generation}, you sent "
            f"{expected_generation}); read it again and retry"
        )
    if row.deleting:
        raise Conflict(f"volume {name!r} is being deleted", code="invalid_state")
    row.spec = spec.model_dump(mode="json")
    row.generation += 1
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def update_volume_status(
    session: Session, name: str, status: VolumeStatus, *, failure: OperationError | None = None
) -> None:
    """Write the observed status and why creation failed (None clears it); NotFound if gone.

    `attached_to` and `owner` are kept as stored: the instance reconciler records
    attachments (set_attached_to), and a volume reconcile must not undo one it did not see.
    """
    row = _row(session, name)
    document = status.model_dump(mode="json")
    document["attached_to"] = row.attached_to
    document["owner"] = row.owner
    row.status = document
    row.failure = failure.model_dump(mode="json") if failure else None
    row.updated_at = utcnow()


def set_attached_to(session: Session, name: str, instance: str | None) -> bool:
    """Record which instance the volume is attached to now; True when that changed."""
    row = _find_row(session, name)
    if row is None or row.attached_to == instance:
        return False
    status = VolumeStatus.model_validate(row.status)
    status.attached_to = instance
    row.status = status.model_dump(mode="json")
    row.attached_to = instance
    row.updated_at = utcnow()
    return True


def mark_volume_deleting(session: Session, name: str) -> Volume:
    """Flag the volume for deletion; the reconciler removes it on the host, then the row."""
    row = _row(session, name)
    if not row.deleting:
        row.deleting = True
        row.updated_at = utcnow()
        session.flush()
    return _to_model(row)


def unmark_volume_deleting(session: Session, name: str) -> None:
    """Undo mark_volume_deleting (the host refused to remove the volume)."""
    row = _find_row(session, name)
    if row is not None and row.deleting:
        row.deleting = False
        row.updated_at = utcnow()


def delete_volume_record(session: Session, name: str) -> None:
    """Remove the row (idempotent)."""
    row = _find_row(session, name)
    if row is not None:
        session.delete(row)


def volumes_in_pool(session: Session, pool: str) -> list[str]:
    """Names of the volumes in `pool`."""
    query = select(VolumeRow.name).where(VolumeRow.pool == pool).order_by(VolumeRow.name)
    return list(session.scalars(query))


def thin_clones_of(session: Session, volume: str) -> list[str]:
    """Names of the volumes that are thin clones of `volume` (they need it to exist)."""
    query = (
        select(VolumeRow.name)
        .where(VolumeRow.source_volume == volume, VolumeRow.thin_source)
        .order_by(VolumeRow.name)
    )
    return list(session.scalars(query))


def volumes_using_image(session: Session, image: str) -> list[str]:
    """Names of the volumes thinly cloned from `image` (its disk is their backing file)."""
    query = (
        select(VolumeRow.name)
        .where(VolumeRow.source_image == image, VolumeRow.thin_source)
        .order_by(VolumeRow.name)
    )
    return list(session.scalars(query))


def claim_volumes(session: Session, instance: str, volumes: Iterable[str]) -> None:
    """Make `volumes` exactly the set claimed by `instance` (its new spec.disks).

    Conflict(volume_attached) when one of them is claimed by another instance; NotFound
    when one does not exist. Call it in the transaction that writes the instance's spec.
    """
    wanted = list(volumes)
    rows = {
        row.name: row
        for row in session.scalars(
            select(VolumeRow).where(or_(VolumeRow.name.in_(wanted), VolumeRow.instance == instance))
        )
    }
    for name in wanted:
        row = rows.get(name)
        if row is None:
            raise _not_found(name)
        if row.instance is not None and row.instance != instance:
            raise Conflict(
                f"volume {name!r} is attached to instance {row.instance!r}; detach it there first",
                code="volume_attached",
                field="spec.disks",
            )
    for row in rows.values():
        claimed = row.name in wanted
        if claimed and row.instance != instance:
            row.instance = instance
            row.updated_at = utcnow()
        elif not claimed and row.instance == instance:
            row.instance = None
            row.updated_at = utcnow()


def volumes_of_instance(session: Session, instance: str) -> list[VolumeRecord]:
    """Volumes claimed by, attached to, or owned by `instance`, by name."""
    query = (
        select(VolumeRow)
        .where(
            or_(
                VolumeRow.instance == instance,
                VolumeRow.attached_to == instance,
                VolumeRow.owner == instance,
            )
        )
        .order_by(VolumeRow.name)
    )
    return [_to_record(row) for row in session.scalars(query)]


def release_instance(session: Session, instance: str) -> list[str]:
    """Drop every claim and attachment of a deleted instance; return what it owned."""
    owned = []
    for record in volumes_of_instance(session, instance):
        row = _row(session, record.name)
        if row.instance == instance:
            row.instance = None
        if row.attached_to == instance:
            status = VolumeStatus.model_validate(row.status)
            status.attached_to = None
            row.status = status.model_dump(mode="json")
            row.attached_to = None
        if row.owner == instance:
            owned.append(row.name)
        row.updated_at = utcnow()
    return owned


def disown(session: Session, name: str) -> None:
    """Make an instance's own volume an ordinary one (it outlives its instance)."""
    row = _find_row(session, name)
    if row is not None and row.owner is not None:
        row.owner = None
        row.updated_at = utcnow()


def pending_restores_from(session: Session, path: str) -> list[str]:
    """Names of the volumes still to be made from the backup file `path`."""
    query = (
        select(VolumeRow)
        .where(VolumeRow.restore_source == path, VolumeRow.deleting.is_(False))
        .order_by(VolumeRow.name)
    )
    return [
        row.name
        for row in session.scalars(query)
        if VolumeStatus.model_validate(row.status).state == VolumeState.PENDING
    ]
