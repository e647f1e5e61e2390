"""/v1/events: server-sent events, resumable with Last-Event-ID (or `?since=`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from corral.api.auth import require_token_or_query
from corral.api.context import ApiContext, api_context
from corral.bus.local import SubscriptionClosed, SubscriptionLagged
from corral.model.event import Event

router = APIRouter(tags=["events"])
Context = Annotated[ApiContext, Depends(api_context)]
KEEPALIVE_S = 15.0
_REPLAY_BATCH = 1000


def format_event(event: Event) -> str:
    """One SSE message: id, event type, and the Event as JSON."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


async def event_stream(context: ApiContext, after: int | None) -> AsyncIterator[str]:
    """Replay stored events after `after` (if given), then follow live ones, without gaps."""
    subscription = context.bus.subscribe()  # before the replay: nothing falls in between
    try:
        yield ": corral events\n\n"  # lets clients see the stream is open at once
        last = after
        if last is not None:
            while True:
                batch = context.events.after(last, _REPLAY_BATCH)
                for event in batch:
                    yield format_event(event)
                    last = event.id
                if len(batch) < _REPLAY_BATCH:
                    break
        while True:
            try:
                live = await subscription.get(KEEPALIVE_S)
            except (SubscriptionLagged, SubscriptionClosed):
                return  # the client reconnects with Last-Event-ID and replays from the log
            if live is None:
                yield ": keep-alive\n\n"
                continue
            if last is not None and live.id <= last:
                continue
            yield format_event(live)
            last = live.id
    finally:
        subscription.close()


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    dependencies=[Depends(require_token_or_query)],
)
async def stream_events(
    context: Context,
    since: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events as they happen; `since`/Last-Event-ID first replays the ones after that id."""
    after = since
    if last_event_id and last_event_id.strip().isdigit():
        after = int(last_event_id.strip())
    return StreamingResponse(
        event_stream(context, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
