"""The HTTP API (docs/api.md): FastAPI routers, bearer auth, problem+json errors, SSE, console."""

from corral.api.app import create_app
from corral.api.context import ApiContext

__all__ = ["ApiContext", "create_app"]
