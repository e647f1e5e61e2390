"""Fixtures for client tests: a CannedAPI behind httpx.MockTransport, and model builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from corral.client import AsyncCorralClient
from corral.client.testing import CannedAPI
from corral.model import Instance, InstanceSpec, InstanceStatus, Operation

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TOKEN = "s3cret-token"


def build_instance(name: str = "vm1", **status: Any) -> Instance:
    return Instance(
        name=name,
        uid=f"uid-{name}",
        created_at=NOW,
        updated_at=NOW,
        spec=InstanceSpec(image="tiny"),
        status=InstanceStatus(**status),
    )


def build_operation(op_id: str = "op-1", **fields: Any) -> Operation:
    values: dict[str, Any] = {
        "kind": "create",
        "target_kind": "instance",
        "target": "vm1",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    return Operation(id=op_id, **values)


@pytest.fixture
def make_instance() -> Callable[..., Instance]:
    return build_instance


@pytest.fixture
def make_operation() -> Callable[..., Operation]:
    return build_operation


@pytest.fixture
def api() -> CannedAPI:
    return CannedAPI()


@pytest.fixture
async def client(api: CannedAPI) -> AsyncIterator[AsyncCorralClient]:
    async with AsyncCorralClient(
        "http://corral.test", TOKEN, transport=api.transport(), token_source="test"
    ) as c:
        yield c
