"""Events: what changed, in order, for /v1/events (server-sent events) and `corral events`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Event(BaseModel):
    """One thing that happened; `type` is dotted (instance.state, operation.done)."""

    id: int
    time: datetime
    type: str
    kind: str
    name: str
    data: dict[str, Any] = Field(default_factory=dict)
