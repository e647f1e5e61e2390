"""Fixtures for client tests: a CannedAPI behind httpx.MockTransport, and model builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from corral.client import AsyncCorralClient
from corral.client.testing import CannedAPI, sample_instance, sample_operation
from corral.model import Instance, Operation

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TOKEN = "s3cret-token"


def build_instance(name: str = "vm1", **status: Any) -> Instance:
    return sample_instance(name, **status)


build_operation = sample_operation


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
