"""One root exception for everything Corral raises on purpose.

    CorralError                      root; `code` is stable and machine-readable
    ├── InvalidInput (422)           a field failed validation; `field` names it
    ├── NotFound (404)               an object does not exist
    ├── Conflict (409)               duplicate name, or an action illegal in the object's state
    ├── PreconditionFailed (412)     a stale ETag (If-Match)
    ├── Unauthorized (401)           missing or wrong API token
    ├── TemporaryError               retry after `delay` seconds (reconcile requeues with backoff)
    ├── PermanentError               no retry until the spec changes (Failed condition)
    │   ├── LaunchError              QEMU refused to start; carries the tail of its stderr
    │   └── ImageBuildError          an image recipe could not be built
    ├── GuestAgentError              the guest agent did not answer or answered with an error
    └── HostError                    a host command or syscall failed (wraps the cause)

Foreign errors are wrapped once at the edge with the cause kept: `raise HostError(msg) from err`.
"""

from __future__ import annotations


class CorralError(Exception):
    """Root of Corral's errors. `code` is stable; `message` says what failed and what to do."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidInput(CorralError):
    """A request field is invalid; `field` names it (dotted path)."""

    code = "invalid_input"
    http_status = 422


class NotFound(CorralError):
    """The named object does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(CorralError):
    """The request conflicts with what exists or with the object's current state."""

    code = "conflict"
    http_status = 409


class PreconditionFailed(CorralError):
    """The client's ETag is stale: re-read the object and try again."""

    code = "etag_mismatch"
    http_status = 412


class Unauthorized(CorralError):
    """The API token is missing or wrong."""

    code = "unauthorized"
    http_status = 401


class TemporaryError(CorralError):
    """Worth retrying after `delay` seconds."""

    code = "temporary"
    http_status = 503

    def __init__(self, message: str, *, delay: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.delay = delay


class PermanentError(CorralError):
    """Retrying will not help until the desired state changes."""

    code = "permanent"
    http_status = 500


class LaunchError(PermanentError):
    """QEMU (or another runtime) refused to start; `stderr_tail` is what it said last."""

    code = "launch_failed"

    def __init__(self, message: str, *, stderr_tail: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.stderr_tail = stderr_tail


class ImageBuildError(PermanentError):
    """An image recipe could not be built."""

    code = "image_build_failed"


class GuestAgentError(CorralError):
    """The guest agent did not answer in time or returned an error."""

    code = "guest_agent_error"
    http_status = 502


class HostError(CorralError):
    """A host command or system call failed."""

    code = "host_error"
    http_status = 500
