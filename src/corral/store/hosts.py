"""Host records: the last facts each host's agent reported (capacity, accelerator)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import NotFound
from corral.model.rpc import HostFacts
from corral.store.schema import HostRow
from corral.store.types import utcnow


@dataclass(frozen=True)
class HostRecord:
    """A host's facts, its state, and when they were reported."""

    facts: HostFacts
    state: str
    updated_at: datetime


def _to_record(row: HostRow) -> HostRecord:
    return HostRecord(HostFacts.model_validate(row.facts), row.state, row.updated_at)


def upsert_host(session: Session, facts: HostFacts, state: str = "ready") -> bool:
    """Store the host's facts; return True when they differ from what was stored."""
    row = session.get(HostRow, facts.name)
    document = facts.model_dump(mode="json")
    if row is None:
        session.add(HostRow(name=facts.name, facts=document, state=state, updated_at=utcnow()))
        return True
    changed = row.facts != document or row.state != state
    row.facts = document
    row.state = state
    row.updated_at = utcnow()
    return changed


def list_hosts(session: Session) -> list[HostRecord]:
    """Every known host, by name."""
    return [_to_record(row) for row in session.scalars(select(HostRow).order_by(HostRow.name))]


def find_host(session: Session, name: str) -> HostRecord | None:
    """The host called `name`, or None."""
    row = session.get(HostRow, name)
    return _to_record(row) if row is not None else None


def get_host(session: Session, name: str) -> HostRecord:
    """The host called `name`; NotFound if it never reported."""
    record = find_host(session, name)
    if record is None:
        raise NotFound(f"host {name!r} does not exist; `corral hosts` lists the hosts")
    return record
