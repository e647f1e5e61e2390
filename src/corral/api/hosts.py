"""/v1/hosts: capacity, allocation and accelerator of each host."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.model.host import Host

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])
Context = Annotated[ApiContext, Depends(api_context)]


class HostList(BaseModel):
    """GET /v1/hosts."""

    items: list[Host]


@router.get("", response_model=HostList)
async def list_hosts(context: Context) -> HostList:
    """Every host with its capacity and what instances take from it."""
    return HostList(items=context.controller.hosts.describe_all())


@router.get("/{name}", response_model=Host)
async def get_host(name: str, context: Context) -> Host:
    """One host."""
    return context.controller.hosts.describe(name)
