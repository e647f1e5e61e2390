"""Turn what the server (or the network) said into Corral's own errors.

The API answers problem+json with a stable `code`; the client raises the CorralError subclass that
matches the HTTP status and keeps `code` and `field`, so callers branch on types or codes, never on
HTTP. Network failures become one error whose message says how to reach a server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from corral.errors import (
    Conflict,
    CorralError,
    GuestAgentError,
    ImageBuildError,
    InvalidInput,
    LaunchError,
    NotFound,
    PreconditionFailed,
    Unauthorized,
)
from corral.model import Operation, OperationState

SERVER_UNREACHABLE = "server_unreachable"
BAD_RESPONSE = "bad_response"
OPERATION_TIMEOUT = "operation_timeout"

_BY_STATUS: dict[int, type[CorralError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: InvalidInput,
}

# Operation errors carry a code but no HTTP status; these codes have a natural home in the tree.
_BY_OPERATION_CODE: dict[str, type[CorralError]] = {
    "not_found": NotFound,
    "unknown_image": InvalidInput,
    "image_not_ready": Conflict,
    "invalid_state": Conflict,
    "insufficient_capacity": Conflict,
    "guest_agent_error": GuestAgentError,
    "image_build_failed": ImageBuildError,
    "unknown_pool": InvalidInput,
    "unknown_volume": InvalidInput,
    "not_a_disk_image": InvalidInput,
    "shrink_refused": InvalidInput,
    "volume_attached": Conflict,
    "volume_in_use": Conflict,
    "pool_not_empty": Conflict,
    "snapshot_needs_qcow2": InvalidInput,
    "backup_in_use": Conflict,
}


def error_from_problem(
    status: int, body: bytes, *, method: str, path: str, hint: str = ""
) -> CorralError:
    """The CorralError for an error answer: problem+json `detail`/`code`/`field` when present.

    A body that is not problem+json (a proxy's HTML page, FastAPI's default 404) still yields a
    message naming the request, so the user sees what was asked and what came back.
    """
    problem = _decode_problem(body)
    detail = problem.get("detail")
    if isinstance(detail, str) and detail:
        message = detail
    elif detail is not None:
        message = f"{method} {path} was rejected: {json.dumps(detail)[:500]}"
    elif isinstance(problem.get("title"), str) and problem["title"]:
        message = f"{method} {path} failed: {problem['title']}"
    else:
        text = body.decode("utf-8", "replace").strip()[:300]
        message = f"{method} {path} failed with HTTP {status}" + (f": {text}" if text else "")
    if hint:
        message = f"{message} ({hint})"
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    field = problem.get("field") if isinstance(problem.get("field"), str) else None
    cls = _BY_STATUS.get(status, CorralError)
    if cls is CorralError and code is None:
        code = f"http_{status}"
    return cls(message, code=code, field=field)


def _decode_problem(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def transport_error(url: str, method: str, path: str, err: httpx.TransportError) -> CorralError:
    """A network failure as a CorralError; an unreachable server says how to get one."""
    if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
        return server_unreachable(url, err)
    if isinstance(err, httpx.TimeoutException):
        return CorralError(
            f"the server at {url} did not answer {method} {path} in time ({err!r}); "
            "it may be overloaded, or the request needs a longer --timeout",
            code="timeout",
        )
    return CorralError(
        f"the connection to {url} failed during {method} {path}: {err!r}",
        code="transport_error",
    )


def server_unreachable(url: str, err: BaseException) -> CorralError:
    """The one error for "nobody answers at this URL", with both ways out."""
    reason = str(err) or type(err).__name__
    return CorralError(
        f"cannot reach the Corral server at {url} ({reason}). Start one with `corral serve`, "
        "or point at a running one with --url or CORRAL_URL",
        code=SERVER_UNREACHABLE,
    )


def bad_response(url: str, method: str, path: str, err: Exception) -> CorralError:
    """A 2xx answer this client cannot read: most likely a server of another version."""
    return CorralError(
        f"the server at {url} answered {method} {path} with a body this client does not "
        f"understand ({err}); is it a Corral server of the same version as this client?",
        code=BAD_RESPONSE,
    )


def operation_error(op: Operation) -> CorralError | None:
    """The error a failed operation stands for, or None when it did not fail."""
    if op.state != OperationState.FAILED:
        return None
    code = op.error.code if op.error else "operation_failed"
    detail = op.error.message if op.error else (op.message or "no reason given")
    message = f"{op.kind} of {op.target_kind} {op.target} failed: {detail}"
    if code == "launch_failed":
        return LaunchError(message, code=code)
    return _BY_OPERATION_CODE.get(code, CorralError)(message, code=code)
