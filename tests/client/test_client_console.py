"""The console over a real WebSocket server on loopback: bytes both ways, refusals mapped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from http import HTTPStatus

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from corral.client import AsyncCorralClient
from corral.errors import Conflict, NotFound, Unauthorized

TOKEN = "console-token"


async def echo_upper(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else ""
    if path.startswith("/v1/instances/stopped/"):
        await connection.close(4409, "instance stopped is not running; start it first")
        return
    await connection.send(b"login: ")
    async for message in connection:
        assert isinstance(message, bytes), "the client must send binary frames"
        await connection.send(message.upper())


def check_request(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return connection.respond(HTTPStatus.UNAUTHORIZED, "no token\n")
    if request.path.startswith("/v1/instances/ghost/"):
        body = {"status": 404, "code": "not_found", "detail": "instance ghost does not exist"}
        return connection.respond(HTTPStatus.NOT_FOUND, json.dumps(body))
    return None


@pytest.fixture
async def console_server() -> AsyncIterator[str]:
    server: Server
    async with serve(echo_upper, "127.0.0.1", 0, process_request=check_request) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        yield f"http://{host}:{port}"


async def test_console_relays_binary_frames_with_the_token(console_server: str) -> None:
    client = AsyncCorralClient(console_server, TOKEN)
    async with client, client.console("vm1") as session:
        assert await session.recv() == b"login: "
        await session.send(b"root\n")
        assert await session.recv() == b"ROOT\n"


async def test_console_of_missing_instance_is_not_found(console_server: str) -> None:
    async with AsyncCorralClient(console_server, TOKEN) as client:
        with pytest.raises(NotFound, match="ghost does not exist"):
            async with client.console("ghost"):
                pass


async def test_console_without_token_is_unauthorized(console_server: str) -> None:
    async with AsyncCorralClient(console_server, None) as client:
        with pytest.raises(Unauthorized):
            async with client.console("vm1"):
                pass


async def test_console_closed_with_4409_is_a_conflict(console_server: str) -> None:
    client = AsyncCorralClient(console_server, TOKEN)
    async with client, client.console("stopped") as session:
        with pytest.raises(Conflict, match="not running"):
            await session.recv()
