"""Instance records: create, read, change the spec (with optimistic locking), write status.

The API writes spec, generation and the deleting flag; the controller writes status. Each
function updates only its own columns, so a status write never undoes a spec change.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from corral.errors import Conflict, NotFound, PreconditionFailed
from corral.model.instance import Instance, InstanceSpec, InstanceStatus, PowerState
from corral.store.schema import InstanceRow
from corral.store.types import utcnow


@dataclass(frozen=True)
class InstanceRecord:
    """An instance plus what only the control plane needs to see."""

    instance: Instance
    restart_generation: int = 0

    @property
    def restart_requested(self) -> bool:
        """True while a restart was asked for and the controller has not acted on it yet."""
        return self.restart_generation > self.instance.status.observed_generation


@dataclass(frozen=True)
class Allocation:
    """What instances that should be running take from a host."""

    cpus: int = 0
    memory_mib: int = 0


def _not_found(name: str) -> NotFound:
    return NotFound(f"instance {name!r} does not exist; `corral list` shows the instances")


def _to_model(row: InstanceRow) -> Instance:
    return Instance(
        name=row.name,
        uid=row.uid,
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleting=row.deleting,
        spec=InstanceSpec.model_validate(row.spec),
        status=InstanceStatus.model_validate(row.status),
    )


def _copy_spec_columns(row: InstanceRow, spec: InstanceSpec) -> None:
    row.spec = spec.model_dump(mode="json")
    row.image = spec.image
    row.power = spec.power.value
    row.cpus = spec.cpus
    row.memory_mib = spec.memory_mib


def _row(session: Session, name: str) -> InstanceRow:
    row = session.scalars(select(InstanceRow).where(InstanceRow.name == name)).one_or_none()
    if row is None:
        raise _not_found(name)
    return row


def create_instance(
    session: Session, name: str, spec: InstanceSpec, *, now: datetime | None = None
) -> Instance:
    """Insert a new instance at generation 1; Conflict(already_exists) if the name is taken."""
    exists = session.scalar(select(InstanceRow.id).where(InstanceRow.name == name))
    if exists is not None:
        raise Conflict(
            f"instance {name!r} already exists; choose another name or delete it first",
            code="already_exists",
            field="name",
        )
    now = now or utcnow()
    row = InstanceRow(
        name=name,
        uid=str(uuid.uuid4()),
        generation=1,
        restart_generation=0,
        deleting=False,
        status=InstanceStatus().model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    _copy_spec_columns(row, spec)
    session.add(row)
    session.flush()
    return _to_model(row)


def find_instance(session: Session, name: str) -> InstanceRecord | None:
    """The instance called `name`, or None."""
    row = session.scalars(select(InstanceRow).where(InstanceRow.name == name)).one_or_none()
    if row is None:
        return None
    return InstanceRecord(_to_model(row), row.restart_generation)


def get_instance(session: Session, name: str) -> InstanceRecord:
    """The instance called `name`; NotFound if there is none."""
    record = find_instance(session, name)
    if record is None:
        raise _not_found(name)
    return record


def list_instances(session: Session) -> list[Instance]:
    """Every instance, by name."""
    rows = session.scalars(select(InstanceRow).order_by(InstanceRow.name))
    return [_to_model(row) for row in rows]


class InstanceColumns(NamedTuple):
    """One instance's columns as read, JSON decoded but not validated (see record_from_columns)."""

    name: str
    uid: str
    generation: int
    restart_generation: int
    deleting: bool
    spec: dict[str, Any]
    status: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def fetch_instance_columns(session: Session) -> list[InstanceColumns]:
    """Every instance's columns, by name: one quick read, validated later in small batches.

    The periodic resync reads all instances; doing it in one short transaction and leaving
    the model validation to the caller lets it yield to API requests in between.
    """
    query = select(
        InstanceRow.name,
        InstanceRow.uid,
        InstanceRow.generation,
        InstanceRow.restart_generation,
        InstanceRow.deleting,
        InstanceRow.spec,
        InstanceRow.status,
        InstanceRow.created_at,
        InstanceRow.updated_at,
    ).order_by(InstanceRow.name)
    return [InstanceColumns(*row) for row in session.connection().execute(query)]


def record_from_columns(columns: InstanceColumns) -> InstanceRecord:
    """Validate read columns into an InstanceRecord."""
    instance = Instance(
        name=columns.name,
        uid=columns.uid,
        generation=columns.generation,
        created_at=columns.created_at,
        updated_at=columns.updated_at,
        deleting=columns.deleting,
        spec=InstanceSpec.model_validate(columns.spec),
        status=InstanceStatus.model_validate(columns.status),
    )
    return InstanceRecord(instance, columns.restart_generation)


def list_instance_records(session: Session) -> list[InstanceRecord]:
    """Every instance with its control-plane fields, by name."""
    return [record_from_columns(columns) for columns in fetch_instance_columns(session)]


def list_instance_names(session: Session) -> list[str]:
    """Names of every instance (what the periodic resync enqueues)."""
    return list(session.scalars(select(InstanceRow.name).order_by(InstanceRow.name)))


class InstanceJson(NamedTuple):
    """One instance serialised for the API, with what the API needs to know about it."""

    name: str
    generation: int
    text: str


def _json_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _raw_json(value: object) -> str:
    # CAST(json AS TEXT) gives the stored text on SQLite and PostgreSQL alike; a driver that
    # still hands back decoded JSON gets it encoded again.
    return value if isinstance(value, str) else json.dumps(value)


def list_instance_json(session: Session, name: str | None = None) -> list[InstanceJson]:
    """Instances as API JSON text, spliced from the stored spec/status text.

    This is the hot path of GET /v1/instances: spec and status are stored as the models'
    JSON already, so decoding and re-encoding them (or validating them) would triple the cost
    of a listing. tests/store checks that the result equals the models' own JSON.
    """
    query = select(
        InstanceRow.name,
        InstanceRow.uid,
        InstanceRow.generation,
        InstanceRow.created_at,
        InstanceRow.updated_at,
        InstanceRow.deleting,
        cast(InstanceRow.spec, Text),
        cast(InstanceRow.status, Text),
    ).order_by(InstanceRow.name)
    if name is not None:
        query = query.where(InstanceRow.name == name)
    dumps = json.dumps
    result = []
    rows = session.connection().execute(query)  # Core: no ORM row bookkeeping
    for row_name, uid, generation, created, updated, deleting, spec, status in rows:
        text = (
            f'{{"name":{dumps(row_name)},"uid":{dumps(uid)},"generation":{generation},'
            f'"etag":"\\"{generation}\\"","created_at":"{_json_time(created)}",'
            f'"updated_at":"{_json_time(updated)}","deleting":{"true" if deleting else "false"},'
            f'"spec":{_raw_json(spec)},"status":{_raw_json(status)}}}'
        )
        result.append(InstanceJson(row_name, generation, text))
    return result


def update_spec(
    session: Session,
    name: str,
    spec: InstanceSpec,
    *,
    expected_generation: int | None = None,
    restart: bool = False,
) -> Instance:
    """Replace the spec and bump the generation.

    `expected_generation` (from If-Match, or what the controller read) makes it optimistic:
    PreconditionFailed if someone changed the spec since. `restart` asks the controller to
    restart the guest at the new generation. The generation goes up even when the spec is
    equal: that is how "start" retries a failed instance.
    """
    row = _row(session, name)
    if expected_generation is not None and row.generation != expected_generation:
        raise PreconditionFailed(
            f"instance {name!r} changed (now generation {row.generation}, you sent "
            f"{expected_generation}); read it again and retry"
        )
    if row.deleting:
        raise Conflict(f"instance {name!r} is being deleted", code="invalid_state")
    _copy_spec_columns(row, spec)
    row.generation += 1
    if restart:
        row.restart_generation = row.generation
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def update_status(session: Session, name: str, status: InstanceStatus) -> None:
    """Write the observed status (the controller's column); NotFound if the row is gone."""
    row = _row(session, name)
    row.status = status.model_dump(mode="json")
    row.updated_at = utcnow()


def mark_deleting(session: Session, name: str) -> Instance:
    """Flag the instance for deletion; the controller stops the guest and removes the row."""
    row = _row(session, name)
    if not row.deleting:
        row.deleting = True
        row.updated_at = utcnow()
        session.flush()
    return _to_model(row)


def delete_instance(session: Session, name: str) -> None:
    """Remove the row (idempotent: an absent row is not an error)."""
    row = session.scalars(select(InstanceRow).where(InstanceRow.name == name)).one_or_none()
    if row is not None:
        session.delete(row)


def running_allocation(session: Session, *, excluding: str | None = None) -> Allocation:
    """Sum of cpus and memory of instances whose spec says power=running."""
    query = select(
        func.coalesce(func.sum(InstanceRow.cpus), 0),
        func.coalesce(func.sum(InstanceRow.memory_mib), 0),
    ).where(InstanceRow.power == PowerState.RUNNING.value)
    if excluding is not None:
        query = query.where(InstanceRow.name != excluding)
    cpus, memory = session.execute(query).one()
    return Allocation(cpus=int(cpus), memory_mib=int(memory))


def count_instances(session: Session) -> int:
    """How many instances exist."""
    return int(session.scalar(select(func.count(InstanceRow.id))) or 0)


def instances_using_image(session: Session, image: str) -> list[str]:
    """Names of the instances whose spec boots `image`."""
    query = select(InstanceRow.name).where(InstanceRow.image == image).order_by(InstanceRow.name)
    return list(session.scalars(query))
