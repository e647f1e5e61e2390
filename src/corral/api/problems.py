"""Every error as application/problem+json with a stable `code` (docs/api.md, Conventions).

CorralError subclasses carry code, field and HTTP status; request validation errors are
mapped to `invalid_input` / `invalid_name` / `malformed_body` with the dotted field; anything
unexpected is a 500 `internal` whose detail points at the server log, never a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from corral.errors import CorralError, TemporaryError, Unauthorized

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://corral.dev/errors/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
# Fields whose validator is the object-name rule: a failure there is `invalid_name`.
_NAME_FIELDS = {"name", "image", "recipe", "pool", "volume", "instance", "snapshot"}
_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_BODY_SHAPE_ERRORS = {"missing", "model_attributes_type", "dict_type", "model_type"}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def corral_problem(err: CorralError) -> JSONResponse:
    """The problem+json for one of our own errors."""
    headers: dict[str, str] = {}
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="corral"'
    if isinstance(err, TemporaryError):
        headers["Retry-After"] = str(max(1, round(err.delay)))
    return problem(err.http_status, err.code, err.message, field=err.field, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    parts = [str(part) for part in loc]
    source = parts[0] if parts and parts[0] in _LOCATIONS else ""
    path = parts[1:] if source else parts
    return source, ".".join(path) or None


def _message(error: dict[str, Any]) -> str:
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    """422 for a request FastAPI could not validate, naming the first field at fault."""
    errors = list(exc.errors())
    if not errors:
        return problem(422, "invalid_input", "the request is invalid")
    first = errors[0]
    source, field = _field_of(tuple(first.get("loc", ())))
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        detail = "the request body is not valid JSON"
        detail += f" ({reason})" if reason else ""
        return problem(422, "malformed_body", detail + "; send a JSON object")
    if source == "body" and field is None and kind in _BODY_SHAPE_ERRORS:
        return problem(
            422,
            "malformed_body",
            f"the request body must be a JSON object ({_message(first)}); see docs/api.md",
        )
    last = field.rsplit(".", 1)[-1] if field else ""
    code = "invalid_name" if kind == "value_error" and last in _NAME_FIELDS else "invalid_input"
    detail = f"{field}: {_message(first)}" if field else _message(first)
    others = [
        {"field": _field_of(tuple(e.get("loc", ())))[1], "message": _message(e)} for e in errors
    ]
    return problem(422, code, detail, field=field, extra={"errors": others})


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem+json."""

    @app.exception_handler(CorralError)
    async def _corral(_request: Request, exc: CorralError) -> JSONResponse:
        return corral_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}; see /docs"
            return problem(404, "not_found", detail)
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
            return problem(405, "invalid_input", detail)
        return problem(
            exc.status_code, "invalid_input", str(exc.detail), headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "internal",
            f"an internal error happened ({type(exc).__name__}); the server log has the details",
        )
