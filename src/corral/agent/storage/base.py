"""The storage driver seam: one Protocol every pool backend implements, plus the request rules
they all share (pure functions, so every driver refuses the same things with the same codes).

One backend object stands for one pool. Backends are synchronous and not thread-safe: the agent
runs them in worker threads and serialises the mutating calls of one pool. The fake, `dir` and
`btrfs` backends pass the same contract suite (tests/agent/storage/test_storage_contract.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from corral.errors import InvalidInput
from corral.model.names import validate_name
from corral.model.rpc import PoolFacts, VolumeFacts, VolumeRequest
from corral.model.storage import MAX_VOLUME_BYTES, MIN_VOLUME_BYTES

FORMATS = ("qcow2", "raw")
SECTOR = 512


@dataclass(frozen=True)
class StorageCapabilities:
    """What a pool driver can do, as data (the control plane reads it; nobody checks types).

    thin_clone: clones share the source's data until written.
    reflink: same-format clones are reflinks, independent of their source (no backing chain,
        so the source can be deleted while clones live).
    snapshots: the driver can snapshot a volume by itself (volume snapshots go through QEMU on
        qcow2 for now, so no driver claims this yet).
    """

    thin_clone: bool = True
    reflink: bool = False
    snapshots: bool = False
    formats: tuple[str, ...] = FORMATS


class StorageBackend(Protocol):
    """One storage pool on this host and the volumes in it."""

    name: str
    driver: str
    capabilities: StorageCapabilities

    @property
    def path(self) -> Path:
        """The directory the volumes live in."""
        ...

    def ensure(self) -> None:
        """Make the pool exist and be usable; idempotent. Re-mounts a btrfs loop after a reboot
        and removes half-made volume files left by a crash."""
        ...

    def facts(self) -> PoolFacts:
        """Capacity, use, allocation, provisioned size and volume count."""
        ...

    def destroy(self) -> None:
        """Undo everything `ensure` made; Conflict `pool_not_empty` while volumes remain.
        No-op when the pool is already gone."""
        ...

    def list_volumes(self) -> list[VolumeFacts]:
        """Every volume in the pool, by name."""
        ...

    def create_volume(self, req: VolumeRequest) -> VolumeFacts:
        """Blank, thin clone (of `source_path` or `source_volume`) or full copy; all or nothing.
        A volume of that name and format that already exists is returned as it is."""
        ...

    def volume_facts(self, name: str) -> VolumeFacts:
        """A volume's size, allocation and backing; NotFound `unknown_volume` if absent."""
        ...

    def resize_volume(self, name: str, size_bytes: int) -> VolumeFacts:
        """Grow a volume (same size: no-op); InvalidInput `shrink_refused` when smaller."""
        ...

    def delete_volume(self, name: str) -> None:
        """Remove a volume; Conflict `volume_in_use` while a clone depends on it, Conflict
        `volume_attached` while a running guest has it open. No-op if absent."""
        ...

    def volume_path(self, name: str) -> Path:
        """Where an existing volume's file is (what QEMU opens); NotFound if absent."""
        ...


# -- rules every driver applies ------------------------------------------------------------------


class CloneMethod(StrEnum):
    """How a thin clone shares its source's data."""

    REFLINK = "reflink"  # a copy sharing extents (btrfs): independent of the source
    BACKING = "backing"  # a qcow2 overlay reading unwritten clusters from the source


def check_size(size_bytes: int, field: str = "spec.size_bytes") -> int:
    """A volume size must lie in the model's bounds and be whole 512-byte sectors."""
    if not MIN_VOLUME_BYTES <= size_bytes <= MAX_VOLUME_BYTES:
        raise InvalidInput(
            f"size {size_bytes} bytes is out of range; use {MIN_VOLUME_BYTES} to "
            f"{MAX_VOLUME_BYTES} bytes",
            code="invalid_size",
            field=field,
        )
    if size_bytes % SECTOR:
        raise InvalidInput(
            f"size {size_bytes} bytes is not a multiple of {SECTOR}; round it up to "
            f"{-(-size_bytes // SECTOR) * SECTOR}",
            code="size_unaligned",
            field=field,
        )
    return size_bytes


def grown_size(requested: int | None, current: int, what: str) -> int:
    """The size a volume gets: `requested`, or `current` when None; never smaller."""
    if requested is None:
        return current
    check_size(requested)
    if requested < current:
        raise InvalidInput(
            f"{what} is {current} bytes; it cannot shrink to {requested} bytes (volumes only "
            "grow, shrinking would cut off the guest's data); ask for at least "
            f"{current} bytes",
            code="shrink_refused",
            field="spec.size_bytes",
        )
    return requested


def check_source_path(path: str) -> Path:
    """A source image path must be absolute and plain (no '..', no control characters)."""
    if (
        not os.path.isabs(path)
        or any(part == ".." for part in path.split("/"))
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
    ):
        raise InvalidInput(
            f"source image path {path!r} must be absolute, without '..' or control characters",
            code="invalid_path",
            field="spec.source.image",
        )
    return Path(path)


def check_volume_request(req: VolumeRequest) -> None:
    """Refuse a request that no driver could honour, before touching anything."""
    validate_name(req.pool, "spec.pool")
    validate_name(req.name, "name")
    if req.format not in FORMATS:
        raise InvalidInput(
            f"format {req.format!r} is not supported; use one of: {', '.join(FORMATS)}",
            code="unknown_format",
            field="spec.format",
        )
    if req.source_path is not None and req.source_volume is not None:
        raise InvalidInput(
            "give either a source image or a source volume, not both",
            code="two_sources",
            field="spec.source",
        )
    if req.source_volume is not None:
        validate_name(req.source_volume, "spec.source.volume")
        if req.source_volume == req.name:
            raise InvalidInput(
                f"volume {req.name!r} cannot be made from itself",
                code="self_source",
                field="spec.source.volume",
            )
    if req.source_snapshot_tag is not None:
        validate_name(req.source_snapshot_tag, "spec.source.snapshot")
        if req.source_volume is None or not req.full_copy:
            raise InvalidInput(
                "a volume from a snapshot is a full copy of a source volume: give "
                "`source_volume` and `full_copy`",
                code="invalid_input",
                field="spec.source",
            )
    if req.source_path is not None:
        check_source_path(req.source_path)
    if req.source_path is None and req.source_volume is None:
        if req.full_copy:
            raise InvalidInput(
                "a full copy needs a source volume or image",
                code="copy_needs_source",
                field="spec.source",
            )
        if req.size_bytes is None:
            raise InvalidInput(
                "a blank volume needs a size", code="size_required", field="spec.size_bytes"
            )
    if req.size_bytes is not None:
        check_size(req.size_bytes)


def choose_clone_method(
    requested_format: str, source_format: str, can_reflink: bool
) -> CloneMethod:
    """Reflink when the driver can and the format stays; else a qcow2 overlay; a raw thin clone
    that cannot be a reflink is refused (raw images have no backing files)."""
    if can_reflink and requested_format == source_format:
        return CloneMethod.REFLINK
    if requested_format == "qcow2":
        return CloneMethod.BACKING
    raise InvalidInput(
        f"a thin clone in {requested_format!r} format is not possible here (from a "
        f"{source_format!r} source{', across filesystems' if can_reflink else ''}); ask for "
        "qcow2, or for a full copy",
        code="thin_clone_needs_qcow2",
        field="spec.format",
    )


def volume_file_name(name: str, fmt: str) -> str:
    """The file a volume lives in, inside its pool's directory."""
    return f"{name}.{fmt}"
