"""The working state of one reconcile: what it read, what it changed, how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from corral.errors import CorralError
from corral.model.instance import Condition, Instance, InstanceSpec, InstanceStatus
from corral.model.rpc import GuestObservation, GuestRunState
from corral.store.operations import OperationRecord


class StepFailed(CorralError):
    """A step failed for good (until the spec changes): the reconcile records it and stops."""

    http_status = 500

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class Interrupted(Exception):
    """A newer desired state arrived while a step was waiting; plan again from scratch."""


@dataclass
class ReconcileRun:
    """One pass over one instance. `status` is the copy the steps change and write;
    `guest_disks` the disk ids of the running guest as the steps leave them (None: the guest
    does not run)."""

    instance: Instance
    observation: GuestObservation
    operations: list[OperationRecord]
    status: InstanceStatus = field(init=False)
    guest_disks: set[str] | None = field(init=False)
    failure: StepFailed | None = None
    deleted: bool = False

    def __post_init__(self) -> None:
        self.status = self.instance.status.model_copy(deep=True)
        alive = self.observation.state in (GuestRunState.RUNNING, GuestRunState.PAUSED)
        self.guest_disks = set(self.observation.disks) if alive else None

    @property
    def name(self) -> str:
        """The instance's name."""
        return self.instance.name

    @property
    def spec(self) -> InstanceSpec:
        """The spec this pass works towards."""
        return self.instance.spec

    @property
    def generation(self) -> int:
        """The generation this pass works towards."""
        return self.instance.generation

    @property
    def operation_ids(self) -> list[str]:
        """Ids of the running operations on this instance."""
        return [record.operation.id for record in self.operations]


def set_condition(
    status: InstanceStatus,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    now: datetime,
) -> None:
    """Set a condition; `since` moves only when its truth value changes."""
    current = status.condition(type_)
    if current is None:
        status.conditions.append(
            Condition(type=type_, status=value, reason=reason, message=message, since=now)
        )
        return
    if current.status != value:
        current.since = now
    current.status = value
    current.reason = reason
    current.message = message
