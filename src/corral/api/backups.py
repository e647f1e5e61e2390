"""/v1/volumes/{name}/backups: back up, list restore points, restore, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted, items
from corral.model.operation import Operation
from corral.model.snapshot import BackupCreate, BackupPoint, RestoreRequest

router = APIRouter(prefix="/v1/volumes/{name}/backups", tags=["backups"])
Context = Annotated[ApiContext, Depends(api_context)]
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Operation, "description": "Accepted: follow the Operation"}
}


class BackupList(BaseModel):
    """GET /v1/volumes/{name}/backups."""

    items: list[BackupPoint]


@router.get("", response_model=BackupList)
async def list_backups(name: str, context: Context) -> JSONResponse:
    """The volume's restore points, oldest first (also after the volume was deleted)."""
    points = context.controller.backups.list(name)
    return items([point.model_dump(mode="json") for point in points])


@router.post("", status_code=202, responses=_ACCEPTED)
async def create_backup(
    name: str, context: Context, body: Annotated[BackupCreate | None, Body()] = None
) -> JSONResponse:
    """Back the volume up (kind backup, with progress): incremental on top of the newest
    point when the chain allows it, else (or with `full`) full."""
    return accepted(context.controller.backups.create(name, body or BackupCreate()))


@router.get("/{backup}", response_model=BackupPoint)
async def get_backup(name: str, backup: str, context: Context) -> BackupPoint:
    """One restore point."""
    return context.controller.backups.get(name, backup)


@router.delete("/{backup}", status_code=202, responses=_ACCEPTED)
async def delete_backup(
    name: str,
    backup: str,
    context: Context,
    chain: Annotated[bool, Query(description="Also every point built on this one")] = False,
) -> JSONResponse:
    """Delete a restore point nothing builds on (409 backup_in_use otherwise), or with
    `chain=true` the point and every point on top of it (kind backup-delete)."""
    return accepted(context.controller.backups.delete(name, backup, chain=chain))


@router.post("/{backup}/actions/restore", status_code=202, responses=_ACCEPTED)
async def restore_backup(
    name: str, backup: str, body: RestoreRequest, context: Context
) -> JSONResponse:
    """Make a new volume from a restore point (kind backup-restore, on the new volume)."""
    return accepted(context.controller.backups.restore(name, backup, body))
