"""/v1/operations: long work, readable at any time, with a long-poll `?wait=` to follow it."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.bus.local import SubscriptionClosed, SubscriptionLagged
from corral.model.operation import Operation
from corral.store import operations as operation_store

router = APIRouter(prefix="/v1/operations", tags=["operations"])
Context = Annotated[ApiContext, Depends(api_context)]
MAX_WAIT_S = 300.0


class OperationList(BaseModel):
    """GET /v1/operations."""

    items: list[Operation]


def _read(context: ApiContext, op_id: str) -> Operation:
    with context.controller.db.transaction() as session:
        return operation_store.get_operation(session, op_id)


@router.get("", response_model=OperationList)
async def list_operations(context: Context) -> OperationList:
    """The newest 100 operations, newest first."""
    with context.controller.db.transaction() as session:
        return OperationList(items=operation_store.list_operations(session, 100))


@router.get("/{op_id}", response_model=Operation)
async def get_operation(
    op_id: str,
    context: Context,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
) -> Operation:
    """One operation; with `wait`, answer when it is done or after `wait` seconds."""
    with context.bus.subscribe() as events:  # subscribe first, so no finish slips by
        op = _read(context, op_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not op.done:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event = await events.get(remaining)
            except (SubscriptionLagged, SubscriptionClosed):
                return _read(context, op_id)
            if event is None:
                break
            if event.type == "operation.done" and event.name == op_id:
                op = _read(context, op_id)
        return op
