"""The composition root: the one module that wires store, bus, agent, controller and API.

`build_app(config)` returns the FastAPI app; its lifespan makes the token, migrates the store,
builds the local agent, and starts the controller. On shutdown it stops the controller and
lets go of the agent WITHOUT stopping guests: a VM never dies because the server did.
`serve(config)` runs it under uvicorn. `corral serve` (cli/serve.py) is the usual way in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from corral.api import ApiContext, create_app
from corral.bus.local import EventBus, HostAgent
from corral.controller import Controller, ControllerSettings
from corral.errors import InvalidInput
from corral.model.names import MAX_NAME_LENGTH
from corral.paths import DEFAULT_LISTEN, ensure_token, runtime_dir_for
from corral.store import open_database, sqlite_url
from corral.store.events import EventLog

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 3


def default_host_name() -> str:
    """This machine's hostname made into a valid object name (`host-1`, not `Host_1.lan`)."""
    raw = socket.gethostname().split(".")[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if not name or not name[0].isalpha():
        name = f"host-{name}" if name else "host"
    return name[:MAX_NAME_LENGTH].rstrip("-")


@dataclass
class ServerConfig:
    """Everything `corral serve` can be told."""

    data_dir: Path
    listen: str = DEFAULT_LISTEN
    db_url: str | None = None
    compute: str = "qemu"
    resync_s: float = 5.0
    host_name: str = field(default_factory=default_host_name)
    ready_timeout_s: float = 120.0
    shutdown_timeout_s: float = 30.0
    cache_dir: Path | None = None

    @property
    def download_cache_dir(self) -> Path:
        """Where image builds cache .debs: `cache_dir`, `$CORRAL_CACHE_DIR`, or `<data-dir>/cache`.

        Kept outside the data dir when asked, so throwaway servers (demo, tests) build warm.
        """
        if self.cache_dir is not None:
            return self.cache_dir
        env = os.environ.get("CORRAL_CACHE_DIR")
        return Path(env) if env else self.data_dir / "cache"

    @property
    def database_url(self) -> str:
        """`db_url`, or the SQLite file `<data-dir>/corral.db`."""
        return self.db_url or sqlite_url(self.data_dir / "corral.db")

    def host_port(self) -> tuple[str, int]:
        """`listen` split into host and port (`[::1]:8470` works too)."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidInput(
                f"listen address {self.listen!r} needs a port, like 127.0.0.1:8470",
                field="listen",
            )
        return host.strip("[]") or "127.0.0.1", int(port)


def build_agent_for(config: ServerConfig) -> HostAgent:
    """The local agent for `config` (the only place the control plane meets corral.agent)."""
    from corral.agent import build_agent

    agent: HostAgent = build_agent(
        config.compute,
        host_name=config.host_name,
        runtime_dir=runtime_dir_for(config.data_dir),
        images_dir=config.data_dir / "images",
        cache_dir=config.download_cache_dir,
        pools_dir=config.data_dir / "pools",
    )
    return agent


def build_app(config: ServerConfig) -> FastAPI:
    """The API app whose lifespan runs the whole embedded server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        token = ensure_token(config.data_dir)
        db = open_database(config.database_url)
        agent = build_agent_for(config)
        events = EventLog(db)
        bus = EventBus(events.append)
        backups_dir = config.data_dir / "backups"
        backups_dir.mkdir(parents=True, exist_ok=True)
        settings = ControllerSettings(
            host_name=config.host_name,
            resync_s=config.resync_s,
            ready_timeout_s=config.ready_timeout_s,
            shutdown_timeout_s=config.shutdown_timeout_s,
            backups_dir=backups_dir,
        )
        controller = Controller(db, bus, agent, settings)
        try:
            await controller.start()
            app.state.corral = ApiContext(
                token=token, controller=controller, events=events, bus=bus
            )
            # Everything alive now lives as long as the server: keep the cyclic GC from
            # rescanning it, which otherwise shows up as 50-100 ms pauses in API latency.
            gc.freeze()
            log.info(
                "corral serving %s on %s (%s compute)",
                config.data_dir,
                config.listen,
                config.compute,
            )
            yield
        finally:
            app.state.corral = None
            await controller.stop()
            await agent.close()  # guests keep running
            db.close()

    return create_app(lifespan=lifespan)


class _Server(uvicorn.Server):
    """uvicorn, plus: streams that never end by themselves are ended when shutdown begins."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        context: ApiContext | None = getattr(self._app.state, "corral", None)
        if context is not None:
            context.bus.close()  # SSE streams and long-polls answer and end now
        await super().shutdown(sockets)


def serve(config: ServerConfig) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (guests keep running after)."""
    host, port = config.host_port()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("corral").setLevel(logging.INFO)
    app = build_app(config)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        # Consoles and anything else still open get a few seconds, then are cut.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    asyncio.run(_Server(uv_config, app).serve())
