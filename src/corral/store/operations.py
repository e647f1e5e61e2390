"""Operation records: created by the API, advanced and finished by the controller.

`params` holds what the controller needs and the API does not show: the generation the
operation waits for, and a stop's force/timeout.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from corral.errors import NotFound
from corral.model.operation import Operation, OperationError, OperationState
from corral.store.schema import OperationRow
from corral.store.types import utcnow

DEFAULT_KEEP_FINISHED = 1000


@dataclass(frozen=True)
class OperationRecord:
    """An operation plus its internal parameters."""

    operation: Operation
    params: dict[str, Any] = field(default_factory=dict)


def _to_model(row: OperationRow) -> Operation:
    return Operation(
        id=row.id,
        kind=row.kind,
        target_kind=row.target_kind,
        target=row.target,
        state=OperationState(row.state),
        progress=row.progress,
        message=row.message,
        error=OperationError.model_validate(row.error) if row.error else None,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row(session: Session, op_id: str) -> OperationRow:
    row = session.scalars(select(OperationRow).where(OperationRow.id == op_id)).one_or_none()
    if row is None:
        raise NotFound(
            f"operation {op_id!r} does not exist (finished operations are kept for a while; "
            "`corral operations` lists the recent ones)"
        )
    return row


def create_operation(
    session: Session,
    kind: str,
    target_kind: str,
    target: str,
    *,
    params: dict[str, Any] | None = None,
    message: str = "",
) -> Operation:
    """Insert a running operation."""
    now = utcnow()
    row = OperationRow(
        id=f"op-{uuid.uuid4().hex}",
        kind=kind,
        target_kind=target_kind,
        target=target,
        state=OperationState.RUNNING.value,
        progress=0.0,
        message=message,
        error=None,
        result={},
        params=dict(params or {}),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _to_model(row)


def get_operation(session: Session, op_id: str) -> Operation:
    """The operation `op_id`; NotFound if it does not exist (or was trimmed)."""
    return _to_model(_row(session, op_id))


def list_operations(session: Session, limit: int = 100) -> list[Operation]:
    """The newest `limit` operations, newest first."""
    rows = session.scalars(select(OperationRow).order_by(OperationRow.seq.desc()).limit(limit))
    return [_to_model(row) for row in rows]


def running_operations(session: Session, target_kind: str, target: str) -> list[OperationRecord]:
    """Unfinished operations on one object, oldest first."""
    query = (
        select(OperationRow)
        .where(
            OperationRow.target_kind == target_kind,
            OperationRow.target == target,
            OperationRow.state == OperationState.RUNNING.value,
        )
        .order_by(OperationRow.seq)
    )
    return [OperationRecord(_to_model(row), row.params) for row in session.scalars(query)]


def all_running_operations(session: Session, target_kind: str) -> list[OperationRecord]:
    """Every unfinished operation on objects of one kind (startup recovery)."""
    query = (
        select(OperationRow)
        .where(
            OperationRow.target_kind == target_kind,
            OperationRow.state == OperationState.RUNNING.value,
        )
        .order_by(OperationRow.seq)
    )
    return [OperationRecord(_to_model(row), row.params) for row in session.scalars(query)]


def update_operation(
    session: Session, op_id: str, *, progress: float | None = None, message: str | None = None
) -> Operation:
    """Record progress (0..1, never backwards) and/or a message on a running operation."""
    row = _row(session, op_id)
    if progress is not None:
        row.progress = max(row.progress, min(1.0, max(0.0, progress)))
    if message is not None:
        row.message = message
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def finish_operation(
    session: Session,
    op_id: str,
    *,
    error: OperationError | None = None,
    message: str | None = None,
    result: dict[str, Any] | None = None,
) -> Operation:
    """Mark the operation succeeded (no `error`) or failed; finishing twice changes nothing."""
    row = _row(session, op_id)
    if row.state != OperationState.RUNNING.value:
        return _to_model(row)
    row.state = (OperationState.FAILED if error else OperationState.SUCCEEDED).value
    row.error = error.model_dump(mode="json") if error else None
    if error is None:
        row.progress = 1.0
    if message is not None:
        row.message = message
    if result is not None:
        row.result = dict(result)
    row.updated_at = utcnow()
    session.flush()
    return _to_model(row)


def trim_operations(session: Session, keep_finished: int = DEFAULT_KEEP_FINISHED) -> int:
    """Delete finished operations beyond the newest `keep_finished`; return how many went."""
    finished = OperationRow.state != OperationState.RUNNING.value
    cutoff = session.scalar(
        select(OperationRow.seq)
        .where(finished)
        .order_by(OperationRow.seq.desc())
        .offset(keep_finished)
        .limit(1)
    )
    if cutoff is None:
        return 0
    result = session.execute(delete(OperationRow).where(finished, OperationRow.seq <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def targets_with_running_operations(session: Session, target_kind: str) -> set[str]:
    """Names of the objects of one kind that have an unfinished operation."""
    query = select(OperationRow.target).where(
        OperationRow.target_kind == target_kind,
        OperationRow.state == OperationState.RUNNING.value,
    )
    return set(session.scalars(query))
