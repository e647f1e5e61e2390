"""Server-sent events: the framing rules, and resuming a dropped stream with Last-Event-ID."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from corral.client import AsyncCorralClient, CorralClient, ServerSentEvent, SSEDecoder
from corral.client.testing import CannedAPI, problem
from corral.errors import CorralError, Unauthorized


def decode(text: str) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [e for line in text.splitlines() if (e := decoder.feed(line)) is not None]
    return events, decoder


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (
            "id: 1\nevent: instance.state\ndata: {}\n\n",
            [ServerSentEvent("{}", "instance.state", "1")],
        ),
        ("data: line one\ndata: line two\n\n", [ServerSentEvent("line one\nline two")]),
        ("data:no-space\n\n", [ServerSentEvent("no-space")]),
        ("data:  two spaces\n\n", [ServerSentEvent(" two spaces")]),
        (": keep-alive\n\n", []),
        ("id: 7\nevent: x\n\n", []),  # no data: nothing to dispatch
        ("data: a\n", []),  # not finished by a blank line yet
        (
            "id: 1\ndata: a\n\ndata: b\n\n",
            [ServerSentEvent("a", id="1"), ServerSentEvent("b", id="1")],
        ),
        ("data: x\nunknown: y\n\n", [ServerSentEvent("x")]),
    ],
)
def test_sse_framing(stream: str, expected: list[ServerSentEvent]) -> None:
    assert decode(stream)[0] == expected


def test_retry_field_sets_the_reconnect_delay_and_ignores_garbage() -> None:
    assert decode("retry: 250\n")[1].retry_ms == 250
    assert decode("retry: soon\n")[1].retry_ms is None


def sse(event_id: int, type_: str = "instance.state", name: str = "vm1") -> bytes:
    data = {
        "id": event_id,
        "time": "2025-01-01T00:00:00Z",
        "type": type_,
        "kind": "instance",
        "name": name,
        "data": {"state": "running", "note": "two\nlines"},
    }
    encoded = json.dumps(data, indent=1)  # spread over several data: lines
    lines = "".join(f"data: {line}\r\n" for line in encoded.split("\n"))
    return f"id: {event_id}\r\nevent: {type_}\r\n{lines}\r\n".encode()


def stream_then_drop(*chunks: bytes) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        raise httpx.ReadError("connection reset by peer")

    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())


def event_stream(*chunks: bytes) -> httpx.Response:
    return httpx.Response(
        200, headers={"Content-Type": "text/event-stream"}, content=b"".join(chunks)
    )


async def test_events_parse_multi_line_data_and_resume_after_a_drop(api: CannedAPI) -> None:
    api.answer(
        "GET",
        "/v1/events",
        lambda request: stream_then_drop(b"retry: 5\r\n\r\n", sse(1), sse(2)),
        lambda request: event_stream(b": hello\r\n\r\n", sse(3, "instance.deleted")),
    )
    async with AsyncCorralClient("http://corral.test", "t", transport=api.transport()) as client:
        received = []
        async for event in client.events(since=0):
            received.append(event)
            if len(received) == 3:
                break

    assert [e.id for e in received] == [1, 2, 3]
    assert received[0].data == {"state": "running", "note": "two\nlines"}
    assert received[2].type == "instance.deleted"
    first, second = api.requests
    assert first.url.params["since"] == "0" and "Last-Event-ID" not in first.headers
    assert second.headers["Last-Event-ID"] == "2" and "since" not in second.url.params
    assert first.headers["Authorization"] == "Bearer t"


async def test_events_error_answer_is_raised_not_retried(api: CannedAPI) -> None:
    api.answer("GET", "/v1/events", problem(401, "unauthorized", "wrong token"))
    async with AsyncCorralClient("http://corral.test", "t", transport=api.transport()) as client:
        with pytest.raises(Unauthorized):
            async for _ in client.events():
                pass
    assert len(api.requests) == 1


async def test_events_first_connection_failure_is_final() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with AsyncCorralClient("http://corral.test", "t", transport=transport) as client:
        with pytest.raises(CorralError) as caught:
            async for _ in client.events():
                pass
    assert caught.value.code == "server_unreachable"


def test_sync_events_iterate_and_close(api: CannedAPI) -> None:
    api.answer("GET", "/v1/events", lambda request: event_stream(sse(1), sse(2)))
    with CorralClient("http://corral.test", "t", transport=api.transport()) as client:
        stream = client.events()
        assert [next(stream).id, next(stream).id] == [1, 2]
        stream.close()
