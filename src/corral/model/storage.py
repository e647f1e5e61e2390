"""Storage: pools (where volumes live) and volumes (virtual disks), spec + status like instances.

A pool is a directory of qcow2/raw files (`dir`) or a btrfs filesystem (`btrfs`, on an existing
mount or a loop file the pool makes). A volume is created blank, as a thin clone of an image or
of another volume, or as a full copy; it grows but never shrinks; it is attached to at most one
instance at a time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.model.names import name_problem

MIN_VOLUME_BYTES = 1024 * 1024
MAX_VOLUME_BYTES = 64 * 1024**4
DEFAULT_POOL = "default"


def _name(value: str | None, what: str) -> str | None:
    if value is not None:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"{what} {problem}")
    return value


class PoolDriver(StrEnum):
    """Storage backend of a pool."""

    DIR = "dir"
    BTRFS = "btrfs"
    FAKE = "fake"  # only when the server runs with the fake compute backend (tests)


class PoolSpec(BaseModel):
    """Desired pool. `path` None: the agent picks `<data-dir>/pools/<name>` (dir) or makes a
    loop file of `size_bytes` with a btrfs filesystem on it (btrfs)."""

    model_config = ConfigDict(extra="forbid")

    driver: PoolDriver = PoolDriver.DIR
    path: str | None = Field(default=None, description="Absolute host path (dir or btrfs mount)")
    size_bytes: int | None = Field(
        default=None, ge=128 * 1024 * 1024, le=MAX_VOLUME_BYTES, description="btrfs loop size"
    )

    @field_validator("path")
    @classmethod
    def _absolute_clean_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/"):
            raise ValueError("path must be absolute")
        if any(part == ".." for part in value.split("/")):
            raise ValueError("path must not contain '..'")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("path must not contain control characters")
        return value

    @model_validator(mode="after")
    def _btrfs_needs_a_place(self) -> PoolSpec:
        if self.driver == PoolDriver.BTRFS and self.path is None and self.size_bytes is None:
            raise ValueError("a btrfs pool needs `path` (a btrfs mount) or `size_bytes` (loop)")
        return self


class PoolState(StrEnum):
    """Observed state of a pool."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


class PoolStatus(BaseModel):
    """Observed pool: where it is and how full."""

    state: PoolState = PoolState.PENDING
    observed_generation: int = 0
    path: str | None = None
    capacity_bytes: int = 0
    used_bytes: int = 0  # used on the filesystem (by anything)
    allocated_bytes: int = 0  # actually allocated by this pool's volumes (thin: less than sizes)
    provisioned_bytes: int = 0  # sum of the volumes' virtual sizes
    volumes: int = 0
    message: str = ""


class Pool(BaseModel):
    """A storage pool."""

    name: str
    uid: str
    generation: int = 1
    created_at: datetime
    updated_at: datetime
    spec: PoolSpec
    status: PoolStatus = Field(default_factory=PoolStatus)


class PoolCreate(BaseModel):
    """Body of POST /v1/pools."""

    model_config = ConfigDict(extra="forbid")

    name: str
    spec: PoolSpec = Field(default_factory=PoolSpec)

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _name(value, "name") or value


class VolumeFormat(StrEnum):
    """On-disk format of a volume."""

    QCOW2 = "qcow2"
    RAW = "raw"


class VolumeSourceKind(StrEnum):
    """Where a volume's first bytes come from."""

    BLANK = "blank"
    IMAGE = "image"  # thin clone of a disk image (qcow2 backing file / reflink)
    VOLUME = "volume"  # thin clone of another volume (must not be attached)
    COPY = "copy"  # full, independent copy of another volume
    SNAPSHOT = "snapshot"  # full, independent copy of a volume as it was at a snapshot


class VolumeSource(BaseModel):
    """The source of a new volume."""

    model_config = ConfigDict(extra="forbid")

    kind: VolumeSourceKind = VolumeSourceKind.BLANK
    image: str | None = None
    volume: str | None = None
    snapshot: str | None = Field(
        default=None, description="Kind snapshot: the snapshot (of the instance with `volume`)"
    )

    @field_validator("image", "volume", "snapshot")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return _name(value, "name")

    @model_validator(mode="after")
    def _needs_what_it_names(self) -> VolumeSource:
        if self.kind == VolumeSourceKind.IMAGE and not self.image:
            raise ValueError("source kind 'image' needs `image`")
        kinds = (VolumeSourceKind.VOLUME, VolumeSourceKind.COPY, VolumeSourceKind.SNAPSHOT)
        if self.kind in kinds and not self.volume:
            raise ValueError(f"source kind {self.kind.value!r} needs `volume`")
        if (self.kind == VolumeSourceKind.SNAPSHOT) != (self.snapshot is not None):
            raise ValueError("`snapshot` goes with source kind 'snapshot', and only with it")
        return self


class VolumeSpec(BaseModel):
    """Desired volume. `size_bytes` None: the source's size (required for blank volumes)."""

    model_config = ConfigDict(extra="forbid")

    pool: str = DEFAULT_POOL
    size_bytes: int | None = Field(default=None, ge=MIN_VOLUME_BYTES, le=MAX_VOLUME_BYTES)
    format: VolumeFormat = VolumeFormat.QCOW2
    source: VolumeSource = Field(default_factory=VolumeSource)

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, value: str) -> str:
        return _name(value, "pool") or value

    @model_validator(mode="after")
    def _blank_needs_size(self) -> VolumeSpec:
        if self.source.kind == VolumeSourceKind.BLANK and self.size_bytes is None:
            raise ValueError("a blank volume needs `size_bytes`")
        return self


class VolumeSpecPatch(BaseModel):
    """PATCH of a volume: only growing is possible."""

    model_config = ConfigDict(extra="forbid")

    size_bytes: int = Field(ge=MIN_VOLUME_BYTES, le=MAX_VOLUME_BYTES)


class VolumeState(StrEnum):
    """Observed state of a volume."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


class VolumeStatus(BaseModel):
    """Observed volume."""

    state: VolumeState = VolumeState.PENDING
    observed_generation: int = 0
    path: str | None = None
    format: VolumeFormat | None = None
    virtual_size_bytes: int = 0
    allocated_bytes: int = 0
    backing: str | None = None  # what it is thinly cloned from, if anything
    attached_to: str | None = None  # instance name
    owner: str | None = None  # instance that owns it (root disks are deleted with it)
    message: str = ""


class Volume(BaseModel):
    """A virtual disk in a pool."""

    name: str
    uid: str
    generation: int = 1
    created_at: datetime
    updated_at: datetime
    spec: VolumeSpec
    status: VolumeStatus = Field(default_factory=VolumeStatus)


class VolumeCreate(BaseModel):
    """Body of POST /v1/volumes."""

    model_config = ConfigDict(extra="forbid")

    name: str
    spec: VolumeSpec

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return _name(value, "name") or value


class VolumePatch(BaseModel):
    """Body of PATCH /v1/volumes/{name}."""

    model_config = ConfigDict(extra="forbid")

    spec: VolumeSpecPatch


class InstanceDisk(BaseModel):
    """A volume attached to an instance, in `InstanceSpec.disks` (order = device order)."""

    model_config = ConfigDict(extra="forbid")

    volume: str
    boot: bool = False
    read_only: bool = False

    @field_validator("volume")
    @classmethod
    def _volume_name(cls, value: str) -> str:
        return _name(value, "volume") or value
