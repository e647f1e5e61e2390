"""/v1/pools: storage pools (dir, btrfs): create, list, show, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted, items
from corral.model.operation import Operation
from corral.model.storage import Pool, PoolCreate

router = APIRouter(prefix="/v1/pools", tags=["pools"])
Context = Annotated[ApiContext, Depends(api_context)]
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Operation, "description": "Accepted: follow the Operation"}
}


class PoolList(BaseModel):
    """GET /v1/pools."""

    items: list[Pool]


@router.get("", response_model=PoolList)
async def list_pools(context: Context) -> JSONResponse:
    """Every pool with its capacity and usage."""
    return items([pool.model_dump(mode="json") for pool in context.controller.pools.list()])


@router.post("", status_code=202, responses=_ACCEPTED)
async def create_pool(body: PoolCreate, context: Context) -> JSONResponse:
    """Create a pool; the Operation (kind pool-create) follows it until it is ready."""
    return accepted(context.controller.pools.create(body))


@router.get("/{name}", response_model=Pool)
async def get_pool(name: str, context: Context) -> Pool:
    """One pool."""
    return context.controller.pools.get(name)


@router.delete("/{name}", status_code=202, responses=_ACCEPTED)
async def delete_pool(name: str, context: Context) -> JSONResponse:
    """Delete an empty pool; 409 pool_not_empty while it has volumes, 409 for `default`."""
    return accepted(context.controller.pools.delete(name))
