"""The real app (corral.daemon.build_app) on the fake compute backend, in the test's loop.

`api` talks to it in-process (httpx ASGITransport, lifespan run by hand); `live` serves it
with uvicorn on a loopback port for what needs a real socket (SSE, the WebSocket console).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from corral.agent import Agent
from corral.agent.compute.fake import FakeComputeBackend
from corral.api import ApiContext
from corral.daemon import ServerConfig, build_app
from corral.paths import runtime_dir_for


@dataclass
class Api:
    """A running app and an authenticated client."""

    config: ServerConfig
    app: FastAPI
    client: httpx.AsyncClient
    token: str

    @property
    def context(self) -> ApiContext:
        """The wiring the lifespan put on app.state."""
        context: ApiContext = self.app.state.corral
        return context

    @property
    def fake(self) -> FakeComputeBackend:
        """The fake compute backend (crash simulation, boot delay)."""
        agent = self.context.controller.agent
        assert isinstance(agent, Agent)
        assert isinstance(agent.compute, FakeComputeBackend)
        return agent.compute

    async def wait_op(self, answer: httpx.Response, timeout_s: float = 10.0) -> dict[str, Any]:
        """Follow a 202's operation to its end (long-poll) and return it."""
        assert answer.status_code == 202, answer.text
        location = answer.headers["location"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            op: dict[str, Any] = (await self.client.get(location, params={"wait": 2})).json()
            if op["state"] != "running":
                return op
        raise AssertionError(f"operation {location} still running after {timeout_s}s")

    async def build_tiny(self) -> None:
        """Build the fake `tiny` image through the API."""
        op = await self.wait_op(await self.client.post("/v1/images", json={"recipe": "tiny"}))
        assert op["state"] == "succeeded", op

    async def create(self, name: str, **spec: Any) -> dict[str, Any]:
        """Create an instance through the API and wait for its operation."""
        body = {"name": name, "spec": {"image": "tiny", **spec}}
        return await self.wait_op(await self.client.post("/v1/instances", json=body))


def fake_config(data_dir: Path, **changes: Any) -> ServerConfig:
    """A server config for tests: fake compute, quick resync."""
    settings: dict[str, Any] = {"compute": "fake", "resync_s": 0.2, "host_name": "test-host"}
    return ServerConfig(data_dir=data_dir, **(settings | changes))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, ServerConfig]]:
    """build_app(...) with its lifespan entered (the whole embedded server, minus HTTP)."""
    config = fake_config(tmp_path / "data")
    app = build_app(config)
    async with app.router.lifespan_context(app):
        yield app, config
    shutil.rmtree(runtime_dir_for(config.data_dir), ignore_errors=True)


@pytest.fixture
async def api(running: tuple[FastAPI, ServerConfig]) -> AsyncIterator[Api]:
    """An authenticated in-process client of the running app."""
    app, config = running
    token = app.state.corral.token
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://corral", headers=headers, timeout=30
    ) as client:
        yield Api(config, app, client, token)


@pytest.fixture
async def ready_api(api: Api) -> Api:
    """`api` with the tiny image built."""
    await api.build_tiny()
    return api


def free_port() -> int:
    """A loopback TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Live:
    """The app served by uvicorn on loopback."""

    url: str
    token: str
    server: uvicorn.Server

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """uvicorn serving build_app(...) in this loop; stopped (guests untouched) at the end."""
    config = fake_config(tmp_path / "data", listen=f"127.0.0.1:{free_port()}")
    host, port = config.host_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(config), host=host, port=port, log_level="warning")
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    token = (config.data_dir / "token").read_text().strip()
    try:
        yield Live(f"http://{host}:{port}", token, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        shutil.rmtree(runtime_dir_for(config.data_dir), ignore_errors=True)
