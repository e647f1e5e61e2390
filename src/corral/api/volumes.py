"""/v1/volumes: virtual disks: create, list, show, grow, delete, attach, detach."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, field_validator

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted, items
from corral.model.names import name_problem
from corral.model.operation import Operation
from corral.model.storage import Volume, VolumeCreate, VolumePatch

router = APIRouter(prefix="/v1/volumes", tags=["volumes"])
Context = Annotated[ApiContext, Depends(api_context)]
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Operation, "description": "Accepted: follow the Operation"}
}


class VolumeList(BaseModel):
    """GET /v1/volumes."""

    items: list[Volume]


class AttachRequest(BaseModel):
    """Body of the attach action: the instance to attach the volume to."""

    model_config = ConfigDict(extra="forbid")

    instance: str
    read_only: bool = False

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"instance {problem}")
        return value


def _etag(volume: Volume) -> str:
    return f'"{volume.generation}"'


@router.get("", response_model=VolumeList)
async def list_volumes(
    context: Context, pool: Annotated[str | None, Query()] = None
) -> JSONResponse:
    """Every volume (of one pool with `?pool=`), by name."""
    volumes = context.controller.volumes.list(pool)
    return items([volume.model_dump(mode="json") for volume in volumes])


@router.post("", status_code=202, responses=_ACCEPTED)
async def create_volume(body: VolumeCreate, context: Context) -> JSONResponse:
    """Create a volume (blank, from an image, a thin clone or a copy of another volume)."""
    return accepted(context.controller.volumes.create(body))


@router.get("/{name}", response_model=Volume)
async def get_volume(name: str, context: Context) -> JSONResponse:
    """One volume, with its ETag."""
    volume = context.controller.volumes.get(name)
    return JSONResponse(volume.model_dump(mode="json"), headers={"ETag": _etag(volume)})


@router.patch("/{name}", status_code=202, responses=_ACCEPTED)
async def patch_volume(
    name: str,
    body: VolumePatch,
    context: Context,
    if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Grow the volume (online when a running guest has it); 422 shrink_refused if smaller."""
    op, volume = context.controller.volumes.resize(name, body.spec, if_match)
    return accepted(op, headers={"ETag": _etag(volume)})


@router.delete("/{name}", status_code=202, responses=_ACCEPTED)
async def delete_volume(name: str, context: Context) -> JSONResponse:
    """Delete; 409 volume_attached while attached, volume_in_use while a clone needs it."""
    return accepted(context.controller.volumes.delete(name))


@router.post("/{name}/actions/attach", status_code=202, responses=_ACCEPTED)
async def attach_volume(name: str, body: AttachRequest, context: Context) -> JSONResponse:
    """Add the volume to the instance's spec.disks (hot-plugged into a running guest)."""
    op = context.controller.volumes.attach(name, body.instance, read_only=body.read_only)
    return accepted(op)


@router.post("/{name}/actions/detach", status_code=202, responses=_ACCEPTED)
async def detach_volume(name: str, context: Context) -> JSONResponse:
    """Remove the volume from its instance's spec.disks (unplugged from a running guest)."""
    return accepted(context.controller.volumes.detach(name))
