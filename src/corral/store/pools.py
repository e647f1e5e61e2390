"""Pool records: create, read, write status, flag for deletion, remove.

The API writes the spec and the deleting flag; the pool reconciler writes the status. A pool's
spec never changes after creation (there is no PATCH), so its generation stays 1.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import Conflict, NotFound
from corral.model.storage import Pool, PoolSpec, PoolState, PoolStatus
from corral.store.schema import PoolRow
from corral.store.types import utcnow


def _not_found(name: str) -> NotFound:
    return NotFound(f"pool {name!r} does not exist; `corral pool list` shows the pools")


def _to_model(row: PoolRow) -> Pool:
    status = PoolStatus.model_validate(row.status)
    if row.deleting:
        status.state = PoolState.DELETING
    return Pool(
        name=row.name,
        uid=row.uid,
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        spec=PoolSpec.model_validate(row.spec),
        status=status,
    )


def _find_row(session: Session, name: str) -> PoolRow | None:
    return session.scalars(select(PoolRow).where(PoolRow.name == name)).one_or_none()


def _row(session: Session, name: str) -> PoolRow:
    row = _find_row(session, name)
    if row is None:
        raise _not_found(name)
    return row


def create_pool(session: Session, name: str, spec: PoolSpec) -> Pool:
    """Insert a new pool (state pending); Conflict(already_exists) if the name is taken."""
    if _find_row(session, name) is not None:
        raise Conflict(
            f"pool {name!r} already exists; choose another name or delete it first",
            code="already_exists",
            field="name",
        )
    now = utcnow()
    row = PoolRow(
        name=name,
        uid=str(uuid.uuid4()),
        generation=1,
        deleting=False,
        driver=spec.driver.value,
        path=spec.path,
        spec=spec.model_dump(mode="json"),
        status=PoolStatus().model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_model(row)


def find_pool(session: Session, name: str) -> Pool | None:
    """The pool called `name`, or None."""
    row = _find_row(session, name)
    return _to_model(row) if row is not None else None


def get_pool(session: Session, name: str) -> Pool:
    """The pool called `name`; NotFound if there is none."""
    return _to_model(_row(session, name))


def is_deleting(session: Session, name: str) -> bool:
    """True when the pool is flagged for deletion (False when it does not exist)."""
    row = _find_row(session, name)
    return row is not None and row.deleting


def list_pools(session: Session) -> list[Pool]:
    """Every pool, by name."""
    return [_to_model(row) for row in session.scalars(select(PoolRow).order_by(PoolRow.name))]


def list_pool_names(session: Session) -> list[str]:
    """Names of every pool (what the resync enqueues)."""
    return list(session.scalars(select(PoolRow.name).order_by(PoolRow.name)))


def pool_with_path(session: Session, path: str) -> str | None:
    """The name of the pool that uses host path `path`, if any."""
    query = select(PoolRow.name).where(PoolRow.path == path)
    return session.scalars(query).first()


def update_pool_status(session: Session, name: str, status: PoolStatus) -> None:
    """Write the observed status (the reconciler's column); NotFound if the row is gone."""
    row = _row(session, name)
    row.status = status.model_dump(mode="json")
    row.updated_at = utcnow()


def mark_pool_deleting(session: Session, name: str) -> Pool:
    """Flag the pool for deletion; the reconciler removes it on the host, then the row."""
    row = _row(session, name)
    if not row.deleting:
        row.deleting = True
        row.updated_at = utcnow()
        session.flush()
    return _to_model(row)


def unmark_pool_deleting(session: Session, name: str) -> None:
    """Undo mark_pool_deleting (the host refused to remove the pool)."""
    row = _find_row(session, name)
    if row is not None and row.deleting:
        row.deleting = False
        row.updated_at = utcnow()


def delete_pool_record(session: Session, name: str) -> None:
    """Remove the row (idempotent)."""
    row = _find_row(session, name)
    if row is not None:
        session.delete(row)
