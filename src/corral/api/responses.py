"""Small response helpers shared by the routers."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from corral.model.operation import Operation


def accepted(op: Operation, headers: dict[str, str] | None = None) -> JSONResponse:
    """202 with the Operation and where to follow it."""
    all_headers = {"Location": f"/v1/operations/{op.id}", **(headers or {})}
    return JSONResponse(op.model_dump(mode="json"), status_code=202, headers=all_headers)


def items(documents: list[Any]) -> JSONResponse:
    """The `{"items": [...]}` envelope of every list."""
    return JSONResponse({"items": documents})
