"""/v1/instances: the instance resource, its actions, exec and the console log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted
from corral.errors import NotFound
from corral.model.instance import InstanceCreate, InstancePatch, InstanceSpec, InstanceStatus
from corral.model.operation import Operation
from corral.model.rpc import ExecResult
from corral.store import instances as instance_store

router = APIRouter(prefix="/v1/instances", tags=["instances"])
Context = Annotated[ApiContext, Depends(api_context)]
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Operation, "description": "Accepted: follow the Operation"}
}
MAX_CONSOLE_LOG_BYTES = 16 * 1024 * 1024


class InstanceOut(BaseModel):
    """An instance as the API shows it: metadata with its ETag, spec, status."""

    name: str
    uid: str
    generation: int
    etag: str
    created_at: datetime
    updated_at: datetime
    deleting: bool
    spec: InstanceSpec
    status: InstanceStatus


class InstanceList(BaseModel):
    """GET /v1/instances."""

    items: list[InstanceOut]


class StopRequest(BaseModel):
    """Body of stop (and, optionally, restart): ACPI with a timeout, or `force` at once."""

    model_config = ConfigDict(extra="forbid")

    force: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=3600)


class ExecBody(BaseModel):
    """Body of exec: a command (argv) run by the guest agent."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    input: str | None = None


def _json(text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(content=text.encode(), media_type="application/json", headers=headers)


@router.get("", response_model=InstanceList)
async def list_instances(context: Context) -> Response:
    """Every instance, by name."""
    with context.controller.db.transaction() as session:
        rows = instance_store.list_instance_json(session)
    return _json('{"items":[' + ",".join(row.text for row in rows) + "]}")


@router.post("", status_code=202, responses=_ACCEPTED)
async def create_instance(body: InstanceCreate, context: Context) -> JSONResponse:
    """Create an instance; it exists at once, the Operation follows it to ready."""
    return accepted(context.controller.instances.create(body))


@router.get("/{name}", response_model=InstanceOut)
async def get_instance(name: str, context: Context) -> Response:
    """One instance, with its ETag."""
    with context.controller.db.transaction() as session:
        found = instance_store.list_instance_json(session, name=name)
    if not found:
        raise NotFound(f"instance {name!r} does not exist; `corral list` shows the instances")
    return _json(found[0].text, headers={"ETag": f'"{found[0].generation}"'})


@router.patch("/{name}", status_code=202, responses=_ACCEPTED)
async def patch_instance(
    name: str,
    body: InstancePatch,
    context: Context,
    if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Change some spec fields; If-Match makes it safe against concurrent changes."""
    op, instance = context.controller.instances.patch(name, body.spec, if_match)
    return accepted(op, headers={"ETag": instance.etag})


@router.delete("/{name}", status_code=202, responses=_ACCEPTED)
async def delete_instance(name: str, context: Context) -> JSONResponse:
    """Delete; a running guest is shut down first."""
    return accepted(context.controller.instances.delete(name))


@router.post("/{name}/actions/start", status_code=202, responses=_ACCEPTED)
async def start_instance(name: str, context: Context) -> JSONResponse:
    """Boot the guest (power=running); on a failed instance, try again."""
    return accepted(context.controller.instances.start(name))


@router.post("/{name}/actions/stop", status_code=202, responses=_ACCEPTED)
async def stop_instance(
    name: str, context: Context, body: Annotated[StopRequest | None, Body()] = None
) -> JSONResponse:
    """Power off: ACPI, then quit after `timeout_s`; `force` stops at once."""
    body = body or StopRequest()
    op = context.controller.instances.stop(name, force=body.force, timeout_s=body.timeout_s)
    return accepted(op)


@router.post("/{name}/actions/restart", status_code=202, responses=_ACCEPTED)
async def restart_instance(
    name: str, context: Context, body: Annotated[StopRequest | None, Body()] = None
) -> JSONResponse:
    """Shut down (as stop would) and boot again."""
    body = body or StopRequest()
    op = context.controller.instances.restart(name, force=body.force, timeout_s=body.timeout_s)
    return accepted(op)


@router.post("/{name}/actions/exec", response_model=ExecResult)
async def exec_in_instance(name: str, body: ExecBody, context: Context) -> ExecResult:
    """Run a command in the guest; 409 invalid_state unless it is running."""
    return await context.controller.instances.exec(name, body.command, body.timeout_s, body.input)


@router.get("/{name}/console/log", response_class=Response)
async def console_log(
    name: str,
    context: Context,
    max_bytes: Annotated[int, Query(alias="bytes", ge=1, le=MAX_CONSOLE_LOG_BYTES)] = 65536,
) -> Response:
    """The last `bytes` bytes the guest printed on its serial console."""
    data = await context.controller.instances.console_log(name, max_bytes)
    return Response(content=data, media_type="text/plain; charset=utf-8")
