"""Bearer-token authentication: one token per server, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Depends
from starlette.requests import HTTPConnection

from corral.api.context import ApiContext, api_context
from corral.errors import Unauthorized

_HOW = (
    "send `Authorization: Bearer <token>`; the token is in <data-dir>/token on the server "
    "(the CLI reads CORRAL_TOKEN or the data dir)"
)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(given.encode(), expected.encode())


def presented_token(connection: HTTPConnection, *, allow_query: bool = False) -> str | None:
    """The token the client sent: the bearer header, else `?token=` where that is allowed."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    if allow_query:
        return connection.query_params.get("token")
    return None


def check_token(context: ApiContext, given: str | None) -> None:
    """Raise Unauthorized unless `given` is the server's token."""
    if given is None:
        raise Unauthorized(f"missing API token: {_HOW}")
    if not given or not token_matches(given, context.token):
        raise Unauthorized(f"wrong API token: {_HOW}")


async def require_token(
    connection: HTTPConnection, context: ApiContext = Depends(api_context)
) -> None:
    """Dependency of every /v1 route (header only)."""
    check_token(context, presented_token(connection))


async def require_token_or_query(
    connection: HTTPConnection, context: ApiContext = Depends(api_context)
) -> None:
    """Dependency of the routes browsers open without headers (the event stream)."""
    check_token(context, presented_token(connection, allow_query=True))
