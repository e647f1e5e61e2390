"""/v1/instances/{name}/snapshots: take, list, show, revert to and delete snapshots."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted, items
from corral.model.operation import Operation
from corral.model.snapshot import Snapshot, SnapshotCreate

router = APIRouter(prefix="/v1/instances/{name}/snapshots", tags=["snapshots"])
Context = Annotated[ApiContext, Depends(api_context)]
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Operation, "description": "Accepted: follow the Operation"}
}


class SnapshotList(BaseModel):
    """GET /v1/instances/{name}/snapshots."""

    items: list[Snapshot]


@router.get("", response_model=SnapshotList)
async def list_snapshots(name: str, context: Context) -> JSONResponse:
    """The instance's snapshots, oldest first (`parent` and `current` make the tree)."""
    snapshots = context.controller.snapshots.list(name)
    return items([snapshot.model_dump(mode="json") for snapshot in snapshots])


@router.post("", status_code=202, responses=_ACCEPTED)
async def create_snapshot(name: str, body: SnapshotCreate, context: Context) -> JSONResponse:
    """Take a snapshot of the instance's disks (and memory with `memory`); kind
    snapshot-create. 422 snapshot_needs_qcow2 when a writable disk is raw."""
    return accepted(context.controller.snapshots.create(name, body))


@router.get("/{snapshot}", response_model=Snapshot)
async def get_snapshot(name: str, snapshot: str, context: Context) -> Snapshot:
    """One snapshot."""
    return context.controller.snapshots.get(name, snapshot)


@router.delete("/{snapshot}", status_code=202, responses=_ACCEPTED)
async def delete_snapshot(name: str, snapshot: str, context: Context) -> JSONResponse:
    """Delete a snapshot; its children keep their place in the tree (kind snapshot-delete)."""
    return accepted(context.controller.snapshots.delete(name, snapshot))


@router.post("/{snapshot}/actions/revert", status_code=202, responses=_ACCEPTED)
async def revert_snapshot(name: str, snapshot: str, context: Context) -> JSONResponse:
    """Go back to a snapshot (kind snapshot-revert): a memory snapshot is loaded into the
    running guest; a disk-only one shuts the guest down, reverts, and boots it again."""
    return accepted(context.controller.snapshots.revert(name, snapshot))
