"""The FastAPI application: routers, authentication, problem+json errors.

`create_app(lifespan)` builds the app; the composition root (corral.daemon) passes a lifespan
that puts an ApiContext on `app.state.corral`. The API itself never builds an agent or a store.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import Depends, FastAPI

from corral import __version__
from corral.api import (
    backups,
    console,
    events,
    hosts,
    images,
    instances,
    operations,
    pools,
    snapshots,
    volumes,
)
from corral.api.auth import require_token
from corral.api.problems import install_problem_handlers

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(lifespan: Lifespan | None = None) -> FastAPI:
    """The Corral API (docs/api.md), with every /v1 route behind the bearer token."""
    app = FastAPI(
        title="Corral",
        version=__version__,
        description=(
            "VMs on your own servers: instances, snapshots, images, pools, volumes, backups, "
            "operations, events, hosts."
        ),
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    authenticated = [Depends(require_token)]
    routers = (
        instances.router,
        images.router,
        hosts.router,
        operations.router,
        pools.router,
        volumes.router,
        snapshots.router,
        backups.router,
    )
    for router in routers:
        app.include_router(router, dependencies=authenticated)
    app.include_router(events.router)  # its own dependency also accepts ?token=
    app.include_router(console.router)  # checks the token itself (header or ?token=)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: 200 once the server answers (no token needed)."""
        return {"status": "ok"}

    return app
