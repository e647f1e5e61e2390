"""The in-process event bus: recorded first, fanned out in order, slow readers cut off."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from corral.bus.local import EventBus, SubscriptionClosed, SubscriptionLagged
from corral.model.event import Event


def _recorder() -> tuple[list[Event], Any]:
    stored: list[Event] = []

    def record(type_: str, kind: str, name: str, data: dict[str, Any]) -> Event:
        event = Event(
            id=len(stored) + 1, time=datetime.now(UTC), type=type_, kind=kind, name=name, data=data
        )
        stored.append(event)
        return event

    return stored, record


async def test_every_subscriber_gets_every_event_in_order_after_it_is_stored() -> None:
    stored, record = _recorder()
    bus = EventBus(record)
    with bus.subscribe() as first, bus.subscribe() as second:
        for n in range(3):
            bus.publish("instance.state", "instance", "vm1", {"n": n})
        for subscription in (first, second):
            got = [await subscription.get(1) for _ in range(3)]
            assert got == stored
        assert await first.get(0.01) is None  # nothing more: a timeout, not an error
    bus.publish("instance.state", "instance", "vm1", {})  # nobody listens: still stored
    assert len(stored) == 4


async def test_a_subscriber_that_falls_behind_is_cut_off() -> None:
    _, record = _recorder()
    bus = EventBus(record, queue_size=2)
    with bus.subscribe() as slow:
        for _ in range(3):
            bus.publish("x", "k", "n", {})
        await slow.get(1)
        await slow.get(1)
        with pytest.raises(SubscriptionLagged):
            await slow.get(1)


async def test_closing_the_bus_ends_every_stream() -> None:
    _, record = _recorder()
    bus = EventBus(record)
    with bus.subscribe() as open_one:
        bus.close()
        with pytest.raises(SubscriptionClosed):
            await open_one.get(1)
    with bus.subscribe() as late, pytest.raises(SubscriptionClosed):
        await late.get(1)
