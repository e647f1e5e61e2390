"""The serial console over a WebSocket: binary frames both ways, proxied to the agent.

The token comes in the Authorization header or as `?token=` (browsers cannot set headers on
a WebSocket). A refused console is accepted and closed at once with code 4000 + the HTTP
status a REST call would get (4401 wrong token, 4404 no such instance, 4409 not running) and
the problem's detail as the close reason, so every client sees why (a close before accept
would only give a bare HTTP 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from corral.api.auth import check_token, presented_token
from corral.api.context import get_context
from corral.errors import CorralError

log = logging.getLogger(__name__)
router = APIRouter(tags=["console"])
_CHUNK = 4096


_MAX_REASON_BYTES = 123  # what a WebSocket close frame can carry


async def _refuse(websocket: WebSocket, err: CorralError) -> None:
    reason = err.message.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")
    await websocket.accept()
    await websocket.close(code=4000 + err.http_status, reason=reason)


async def _client_to_guest(websocket: WebSocket, writer: asyncio.StreamWriter) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        writer.write(data)
        await writer.drain()


async def _guest_to_client(websocket: WebSocket, reader: asyncio.StreamReader) -> None:
    while chunk := await reader.read(_CHUNK):
        await websocket.send_bytes(chunk)


@router.websocket("/v1/instances/{name}/console")
async def console(websocket: WebSocket, name: str) -> None:
    """Attach to the guest's serial console until either side closes."""
    try:
        context = get_context(websocket)
        check_token(context, presented_token(websocket, allow_query=True))
        reader, writer = await context.controller.instances.open_console(name)
    except CorralError as err:
        await _refuse(websocket, err)
        return
    await websocket.accept()
    tasks = [
        asyncio.ensure_future(_client_to_guest(websocket, writer)),
        asyncio.ensure_future(_guest_to_client(websocket, reader)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                await task
        writer.close()
        with contextlib.suppress(Exception):
            await websocket.close()
