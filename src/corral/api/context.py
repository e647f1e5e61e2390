"""What every route needs, put on app.state by the composition root (corral.daemon)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from corral.bus.local import EventBus
from corral.controller import Controller
from corral.errors import TemporaryError
from corral.store.events import EventLog


@dataclass(frozen=True)
class ApiContext:
    """The token, the controller (and its services), and the event log and bus."""

    token: str
    controller: Controller
    events: EventLog
    bus: EventBus


def get_context(connection: HTTPConnection) -> ApiContext:
    """The ApiContext of the running app; 503 while the server is still starting."""
    context: ApiContext | None = getattr(connection.app.state, "corral", None)
    if context is None:
        raise TemporaryError("the server is starting; try again in a moment", delay=1.0)
    return context


async def api_context(connection: HTTPConnection) -> ApiContext:
    """get_context as a FastAPI dependency (async, so it runs on the loop, not in a thread)."""
    return get_context(connection)
