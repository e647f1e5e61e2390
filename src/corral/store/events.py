"""The event log: an ordered, bounded history that /v1/events replays from (Last-Event-ID)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from corral.model.event import Event
from corral.store.database import Database
from corral.store.schema import EventRow
from corral.store.types import utcnow

DEFAULT_KEEP_EVENTS = 10_000


def _to_model(row: EventRow) -> Event:
    return Event(
        id=row.id, time=row.time, type=row.type, kind=row.kind, name=row.name, data=row.data
    )


def append_event(session: Session, type_: str, kind: str, name: str, data: dict[str, Any]) -> Event:
    """Append one event and return it with its stream id."""
    row = EventRow(time=utcnow(), type=type_, kind=kind, name=name, data=data)
    session.add(row)
    session.flush()
    return _to_model(row)


def events_after(session: Session, after_id: int, limit: int = 1000) -> list[Event]:
    """Events with id > `after_id`, oldest first, at most `limit`."""
    query = select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id).limit(limit)
    return [_to_model(row) for row in session.scalars(query)]


def last_event_id(session: Session) -> int:
    """The id of the newest event (0 when there is none)."""
    return int(session.scalar(select(func.max(EventRow.id))) or 0)


def trim_events(session: Session, keep: int = DEFAULT_KEEP_EVENTS) -> int:
    """Delete all but the newest `keep` events; return how many went."""
    newest = last_event_id(session)
    if newest <= keep:
        return 0
    result = session.execute(delete(EventRow).where(EventRow.id <= newest - keep))
    return int(getattr(result, "rowcount", 0) or 0)


class EventLog:
    """Appends events in their own short transactions and keeps the log bounded.

    It is the `record` function the event bus calls, so an event is stored before any
    subscriber sees it and a reconnecting client can always replay what it missed.
    """

    def __init__(
        self, db: Database, keep: int = DEFAULT_KEEP_EVENTS, trim_every: int = 500
    ) -> None:
        self._db = db
        self._keep = keep
        self._trim_every = trim_every
        self._since_trim = 0

    def __repr__(self) -> str:
        return f"EventLog(keep={self._keep})"

    def append(self, type_: str, kind: str, name: str, data: dict[str, Any]) -> Event:
        """Store one event and return it with its id; trim old ones now and then."""
        with self._db.transaction() as session:
            event = append_event(session, type_, kind, name, data)
            self._since_trim += 1
            if self._since_trim >= self._trim_every:
                self._since_trim = 0
                trim_events(session, self._keep)
        return event

    def after(self, after_id: int, limit: int = 1000) -> list[Event]:
        """Stored events with id > `after_id`, oldest first."""
        with self._db.transaction() as session:
            return events_after(session, after_id, limit)
