"""The in-process bus of the embedded shape: events fanned out to local subscribers.

`EventBus.publish` records the event (through the function it was given; the store does that
in the daemon) and hands it to every subscriber's queue, so SSE streams and long-polls wake up
at once. A subscriber that falls too far behind is cut off rather than slowing the publisher:
it reconnects with Last-Event-ID and replays from the store.

The agent needs no link object here: the in-process Agent already satisfies AgentAPI, and
`HostAgent` adds the one local-only call the API uses (the recipe list).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from corral.bus.agent_link import AgentAPI
from corral.model.event import Event

log = logging.getLogger(__name__)

EventRecorder = Callable[[str, str, str, dict[str, Any]], Event]
DEFAULT_QUEUE_SIZE = 10_000


class HostAgent(AgentAPI, Protocol):
    """The agent of the local host (recipes() moved into AgentAPI itself)."""


class SubscriptionLagged(Exception):
    """The subscriber fell more than its queue size behind; resume from the event log."""


class SubscriptionClosed(Exception):
    """The bus is closing (the server stops): end the stream; the client will reconnect."""


class Subscription:
    """One subscriber's queue of events. Use as a context manager so it is always removed."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=size)
        self.lagged = False
        self.closed = False

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def offer(self, event: Event) -> None:
        """Queue `event`, or mark the subscription lagged when its queue is full."""
        if self.lagged:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            log.warning("an event subscriber fell behind; it will resume from the event log")

    def end(self) -> None:
        """Wake the reader with SubscriptionClosed (the bus is closing)."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue is lagged anyway
            self._queue.put_nowait(None)

    async def get(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None after `timeout_s`.

        SubscriptionLagged if it was cut off for falling behind, SubscriptionClosed when the
        bus closed.
        """
        if self.lagged and self._queue.empty():
            raise SubscriptionLagged("the event subscriber fell behind")
        if self.closed and self._queue.empty():
            raise SubscriptionClosed("the server is stopping")
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None
        if event is None:
            raise SubscriptionClosed("the server is stopping")
        return event

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)


class EventBus:
    """Publish events once; every current subscriber gets each one, in order."""

    def __init__(self, record: EventRecorder, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._record = record
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EventBus(subscribers={len(self._subscribers)})"

    def publish(self, type_: str, kind: str, name: str, data: dict[str, Any]) -> Event:
        """Record an event, then fan it out. Call from the event loop's thread."""
        event = self._record(type_, kind, name, data)
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def subscribe(self) -> Subscription:
        """A new subscription that receives every event published from now on."""
        subscription = Subscription(self, self._queue_size)
        if self._closed:
            subscription.end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription (idempotent)."""
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription (the server is stopping); later ones end at once."""
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.end()
