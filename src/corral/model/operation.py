"""Operations: long work answered with 202 + Location, followed by GET or the event stream."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class OperationState(StrEnum):
    """Lifecycle of an operation."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OperationError(BaseModel):
    """Why an operation failed: the same `code` and message a problem+json body would carry."""

    code: str
    message: str


class Operation(BaseModel):
    """One piece of long work (create, start, stop, restart, delete, image build)."""

    id: str
    kind: str
    target_kind: str
    target: str
    state: OperationState = OperationState.RUNNING
    progress: float = 0.0
    message: str = ""
    error: OperationError | None = None
    result: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime

    @property
    def done(self) -> bool:
        """True once the operation succeeded or failed."""
        return self.state != OperationState.RUNNING
