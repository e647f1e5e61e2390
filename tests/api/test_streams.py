"""Over a real socket: server-sent events (with replay) and the WebSocket serial console."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import Live


async def _read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
            if len(events) >= count:
                break
    return events


async def test_events_stream_live_and_replay_after_last_event_id(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=10) as client:
        async with client.stream("GET", "/v1/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            build = await client.post("/v1/images", json={"recipe": "tiny"})
            assert build.status_code == 202
            got = await asyncio.wait_for(_read_events(stream, 3), 10)
        assert got[0]["event"] == "operation.progress"
        assert got[0]["data"]["name"] == build.json()["id"]
        assert got[0]["data"]["kind"] == "operation"
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)
        first = got[0]["id"]
        # a reconnect with Last-Event-ID gets what came after, from the log
        async with client.stream(
            "GET", "/v1/events", headers={"Last-Event-ID": str(first)}
        ) as replay:
            again = await asyncio.wait_for(_read_events(replay, 2), 10)
        assert [e["id"] for e in again] == [got[1]["id"], got[2]["id"]]
        async with client.stream("GET", "/v1/events", params={"since": 0}) as since:
            from_start = await asyncio.wait_for(_read_events(since, 1), 10)
        assert from_start[0]["id"] == 1
        assert from_start[0]["event"] == "host.updated"  # the agent's facts, at server start


async def test_the_console_is_a_websocket_to_the_serial_port(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=10) as client:
        build = await client.post("/v1/images", json={"recipe": "tiny"})
        await client.get(build.headers["location"], params={"wait": 10})
        create = await client.post("/v1/instances", json={"name": "vm1", "spec": {"image": "tiny"}})
        await client.get(create.headers["location"], params={"wait": 10})
    ws_url = live.url.replace("http://", "ws://") + "/v1/instances/vm1/console"
    async with connect(ws_url, additional_headers=live.headers) as console:
        await console.send(b"echo console-$((6*7))\n")
        received = b""
        while b"console-42" not in received:
            chunk = await asyncio.wait_for(console.recv(), 5)
            received += chunk if isinstance(chunk, bytes) else chunk.encode()
    # the token also works as ?token= (browsers cannot set headers on a WebSocket)
    async with connect(f"{ws_url}?token={live.token}") as console:
        await console.send("hostname\n")
        assert b"vm1" in await asyncio.wait_for(console.recv(), 5)


@pytest.mark.parametrize(
    ("path", "token", "close_code", "words"),
    [
        ("/v1/instances/vm1/console", "wrong", 4401, "wrong API token"),
        ("/v1/instances/ghost/console", None, 4404, "does not exist"),
    ],
)
async def test_a_refused_console_closes_with_4000_plus_the_http_status(
    live: Live, path: str, token: str | None, close_code: int, words: str
) -> None:
    url = live.url.replace("http://", "ws://") + path
    headers = {"Authorization": f"Bearer {token or live.token}"}
    async with connect(url, additional_headers=headers) as console:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(console.recv(), 5)
    frame = closed.value.rcvd
    assert frame is not None
    assert frame.code == close_code
    assert words in frame.reason


async def test_the_console_of_a_stopped_instance_is_refused_with_4409(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=10) as client:
        build = await client.post("/v1/images", json={"recipe": "tiny"})
        await client.get(build.headers["location"], params={"wait": 10})
        spec = {"image": "tiny", "power": "stopped"}
        create = await client.post("/v1/instances", json={"name": "off", "spec": spec})
        await client.get(create.headers["location"], params={"wait": 10})
    url = live.url.replace("http://", "ws://") + "/v1/instances/off/console"
    async with connect(url, additional_headers=live.headers) as console:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(console.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
