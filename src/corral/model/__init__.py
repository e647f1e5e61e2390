"""Pure data shared by every room: specs (desired, writable), statuses (observed), RPC messages.

Nothing here does I/O. pydantic at the edges (API bodies, RPC), plain validation helpers inside.
"""

from corral.model.event import Event
from corral.model.host import Host
from corral.model.image import Image, ImageBuildRequest, ImageState
from corral.model.instance import (
    Condition,
    Instance,
    InstanceCreate,
    InstancePatch,
    InstanceSpec,
    InstanceSpecPatch,
    InstanceState,
    InstanceStatus,
    Machine,
    OnCrash,
    PowerState,
)
from corral.model.names import validate_name
from corral.model.operation import Operation, OperationError, OperationState
from corral.model.sizes import format_size, parse_size

__all__ = [
    "Condition",
    "Event",
    "Host",
    "Image",
    "ImageBuildRequest",
    "ImageState",
    "Instance",
    "InstanceCreate",
    "InstancePatch",
    "InstanceSpec",
    "InstanceSpecPatch",
    "InstanceState",
    "InstanceStatus",
    "Machine",
    "OnCrash",
    "Operation",
    "OperationError",
    "OperationState",
    "PowerState",
    "format_size",
    "parse_size",
    "validate_name",
]
