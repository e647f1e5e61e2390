"""The serial console of an instance over a WebSocket: binary frames both ways.

The WebSocket always goes over a real socket (the httpx transport seam does not carry it); the
token travels in the Authorization header, as for every other call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from corral.client.problems import error_from_problem, server_unreachable
from corral.errors import Conflict, CorralError, NotFound, Unauthorized

log = logging.getLogger("corral.client.console")

# A server may refuse a console after accepting the socket by closing with 4000 + HTTP status
# (4404: no such instance, 4409: not running) and the problem detail as the close reason.
_CLOSE_CODE_ERRORS: dict[int, type[CorralError]] = {
    4401: Unauthorized,
    4404: NotFound,
    4409: Conflict,
}


def websocket_url(base_url: str, path: str) -> str:
    """http(s)://host/... as ws(s)://host/..."""
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://") + path
    return "ws://" + base_url.removeprefix("http://") + path


class ConsoleSession:
    """An open console: `send` bytes to the guest's serial port, `recv` what it printed."""

    def __init__(self, name: str, connection: ClientConnection) -> None:
        self.name = name
        self._connection = connection

    def __repr__(self) -> str:
        return f"ConsoleSession(name={self.name!r}, state={self._connection.state.name})"

    async def send(self, data: bytes) -> None:
        """Write `data` to the serial port."""
        try:
            await self._connection.send(data)
        except ConnectionClosed as err:
            raise self._closed_error(err) from err

    async def recv(self) -> bytes | None:
        """The next chunk the guest printed, or None once the server closed the console."""
        try:
            message = await self._connection.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as err:
            raise self._closed_error(err) from err
        return message if isinstance(message, bytes) else message.encode()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.recv()) is not None:
            yield chunk

    async def close(self) -> None:
        """Leave the console (the guest keeps running)."""
        await self._connection.close()

    def _closed_error(self, err: ConnectionClosed) -> CorralError:
        frame = err.rcvd
        code = frame.code if frame is not None else None
        reason = frame.reason if frame is not None and frame.reason else ""
        if code is not None and code in _CLOSE_CODE_ERRORS:
            return _CLOSE_CODE_ERRORS[code](reason or f"console of {self.name} refused ({code})")
        return CorralError(
            f"the console connection to {self.name} was lost ({err}); run `corral console "
            f"{self.name}` again, or `corral console {self.name} --log` for what it printed",
            code="console_lost",
        )


@asynccontextmanager
async def open_console(
    base_url: str, name: str, token: str | None, *, open_timeout: float = 10.0
) -> AsyncIterator[ConsoleSession]:
    """Connect to the console of `name`; refusals become NotFound/Conflict/Unauthorized."""
    path = f"/v1/instances/{quote(name, safe='')}/console"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection = await connect(
            websocket_url(base_url, path),
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=None,
        )
    except InvalidStatus as err:
        status, body = err.response.status_code, bytes(err.response.body or b"")
        if status == 403 and not body.strip():
            # Starlette answers 403 to any WebSocket closed before accept: no reason to show.
            raise CorralError(
                f"the server refused the console of {name} (HTTP 403) without saying why; check "
                "the API token (CORRAL_TOKEN or --data-dir) and that the instance is running",
                code="console_refused",
            ) from err
        raise error_from_problem(status, body, method="GET", path=path) from err
    except InvalidURI as err:
        raise CorralError(
            f"cannot open a console at {base_url}: {err}", code="invalid_url"
        ) from err
    except (OSError, TimeoutError, InvalidHandshake) as err:
        raise server_unreachable(base_url, err) from err
    log.debug("console of %s open", name)
    try:
        yield ConsoleSession(name, connection)
    finally:
        await connection.close()
