"""The Instance: one model for every guest. Spec is what the user wants; status is what Corral saw.

`generation` goes up on every spec change; the controller copies it to `status.observed_generation`
when it has acted on it. The ETag is the generation, so a status update never invalidates a
client's If-Match.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.model.names import name_problem
from corral.model.storage import (
    DEFAULT_POOL,
    MAX_VOLUME_BYTES,
    MIN_VOLUME_BYTES,
    InstanceDisk,
)

MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 1024 * 1024
MAX_CPUS = 256
MAX_USER_DATA_BYTES = 64 * 1024
MAX_DISKS = 16


class PowerState(StrEnum):
    """Desired power state of an instance."""

    RUNNING = "running"
    STOPPED = "stopped"


class OnCrash(StrEnum):
    """What the controller does when a guest exits without being asked to.

    `stop` (the default, as in Proxmox and Incus): the instance is marked stopped, `spec.power`
    becomes `stopped`, and an event says why. `restart`: it is started again, with backoff.
    """

    STOP = "stop"
    RESTART = "restart"


class Machine(StrEnum):
    """QEMU machine type."""

    PC = "pc"
    Q35 = "q35"
    MICROVM = "microvm"


class InstanceState(StrEnum):
    """Observed lifecycle state."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"


def _check_name_field(value: str, field: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{field} {problem}")
    return value


class InstanceSpec(BaseModel):
    """Desired state of an instance (writable)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="Name of the image to boot")
    cpus: int = Field(default=1, ge=1, le=MAX_CPUS, description="Virtual CPUs")
    memory_mib: int = Field(
        default=256, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB, description="Guest memory in MiB"
    )
    power: PowerState = Field(default=PowerState.RUNNING)
    machine: Machine = Field(default=Machine.PC)
    on_crash: OnCrash = Field(default=OnCrash.STOP)
    disks: list[InstanceDisk] = Field(
        default_factory=list,
        max_length=MAX_DISKS,
        description="Volumes attached to the guest, in device order (vda, vdb, ...)",
    )
    ssh_keys: list[str] = Field(
        default_factory=list, max_length=32, description="SSH keys for cloud-init images"
    )
    user_data: str | None = Field(
        default=None,
        max_length=MAX_USER_DATA_BYTES,
        description="cloud-init user-data for cloud-init images",
    )

    @field_validator("image")
    @classmethod
    def _image_is_a_name(cls, value: str) -> str:
        return _check_name_field(value, "image")

    @field_validator("disks")
    @classmethod
    def _each_volume_once(cls, disks: list[InstanceDisk]) -> list[InstanceDisk]:
        return _unique_disks(disks)


def _unique_disks(disks: list[InstanceDisk]) -> list[InstanceDisk]:
    seen: set[str] = set()
    for disk in disks:
        if disk.volume in seen:
            raise ValueError(f"volume {disk.volume!r} is listed twice")
        seen.add(disk.volume)
    return disks


class InstanceSpecPatch(BaseModel):
    """A partial spec for PATCH: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(default=None, ge=1, le=MAX_CPUS)
    memory_mib: int | None = Field(default=None, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    power: PowerState | None = None
    machine: Machine | None = None
    on_crash: OnCrash | None = None
    disks: list[InstanceDisk] | None = Field(default=None, max_length=MAX_DISKS)

    @field_validator("disks")
    @classmethod
    def _each_volume_once(cls, disks: list[InstanceDisk] | None) -> list[InstanceDisk] | None:
        return None if disks is None else _unique_disks(disks)

    def apply(self, spec: InstanceSpec) -> InstanceSpec:
        """Return `spec` with this patch's fields applied."""
        changes: dict[str, Any] = {
            field: getattr(self, field)
            for field in self.model_fields_set
            if getattr(self, field) is not None
        }
        return spec.model_copy(update=changes)


class RootDisk(BaseModel):
    """At create: make the instance a root volume `<name>-root`, a thin clone of its disk image."""

    model_config = ConfigDict(extra="forbid")

    size_bytes: int | None = Field(default=None, ge=MIN_VOLUME_BYTES, le=MAX_VOLUME_BYTES)
    pool: str = DEFAULT_POOL

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, value: str) -> str:
        return _check_name_field(value, "pool")


class FromSnapshot(BaseModel):
    """At create: the new instance's disks are made from snapshot `snapshot` of `instance`,
    one volume `<name>-<n>` per disk of the snapshot. Full: independent copies. Linked: thin
    clones of one shared read-only base per snapshot disk, `<instance>-<snapshot>-<n>-base`."""

    model_config = ConfigDict(extra="forbid")

    instance: str
    snapshot: str
    linked: bool = False

    @field_validator("instance", "snapshot")
    @classmethod
    def _names(cls, value: str) -> str:
        return _check_name_field(value, "name")


class InstanceCreate(BaseModel):
    """Body of POST /v1/instances. `root_disk` applies to disk images (ignored for initramfs
    images): without it a disk image still gets a root volume of the image's size. With
    `from_snapshot` the disks come from the snapshot instead (they replace `spec.disks`, and
    no root volume is made from the image)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    spec: InstanceSpec
    root_disk: RootDisk | None = None
    from_snapshot: FromSnapshot | None = None

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _check_name_field(value, "name")


class InstancePatch(BaseModel):
    """Body of PATCH /v1/instances/{name}."""

    model_config = ConfigDict(extra="forbid")

    spec: InstanceSpecPatch


class Condition(BaseModel):
    """One observed fact with a reason, as in Kubernetes: Ready, Failed, GuestExited..."""

    type: str
    status: bool
    reason: str
    message: str = ""
    since: datetime


class InstanceStatus(BaseModel):
    """Observed state of an instance (read-only, written by the controller)."""

    state: InstanceState = InstanceState.PENDING
    observed_generation: int = 0
    host: str | None = None
    pid: int | None = None
    ready: bool = False
    accel: str | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    create_to_ready_ms: float | None = None
    restarts: int = 0  # unasked exits in quick succession (drives the on_crash=restart backoff)
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        """The condition of `type_`, if set."""
        return next((c for c in self.conditions if c.type == type_), None)


class Instance(BaseModel):
    """A VM (and later a system container): metadata, spec and status."""

    name: str
    uid: str
    generation: int = 1
    created_at: datetime
    updated_at: datetime
    deleting: bool = False
    spec: InstanceSpec
    status: InstanceStatus = Field(default_factory=InstanceStatus)

    @property
    def etag(self) -> str:
        """Strong ETag of the spec version."""
        return f'"{self.generation}"'
