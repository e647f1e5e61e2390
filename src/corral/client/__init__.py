"""Typed client for Corral's REST API: an async core and a blocking facade over it.

    AsyncCorralClient   every endpoint of docs/api.md as a coroutine returning model objects
    CorralClient        the same methods, blocking (runs the async core on a private loop)
    ConsoleSession      an open serial console (bytes both ways)
    volume_etag         the If-Match value for a volume read with get_volume

Errors are corral.errors.CorralError subclasses: 422 InvalidInput, 404 NotFound, 409 Conflict,
412 PreconditionFailed, 401 Unauthorized, others CorralError; an unreachable server is a
CorralError with code `server_unreachable`.
"""

from corral.client.aio import AsyncCorralClient, OperationCallback, volume_etag
from corral.client.console import ConsoleSession
from corral.client.problems import SERVER_UNREACHABLE, operation_error
from corral.client.settings import ConnectionSettings, resolve_settings
from corral.client.sse import ServerSentEvent, SSEDecoder
from corral.client.sync import CorralClient

__all__ = [
    "SERVER_UNREACHABLE",
    "AsyncCorralClient",
    "ConnectionSettings",
    "ConsoleSession",
    "CorralClient",
    "OperationCallback",
    "SSEDecoder",
    "ServerSentEvent",
    "operation_error",
    "resolve_settings",
    "volume_etag",
]
