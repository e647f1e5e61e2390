"""plan_pool and plan_volume: what to do to make a pool or a volume match its record. Pure.

Each returns one action (a pool or a volume is one thing on the host, not a guest with a
life of its own); every rule is a row of the table tests in tests/controller/test_storage_plan.py.
"""

from __future__ import annotations

from enum import StrEnum

from corral.model.storage import PoolState, PoolStatus, VolumeSpec, VolumeState, VolumeStatus


class PoolAction(StrEnum):
    """One reconcile of a pool."""

    ENSURE = "ensure"  # make it exist and be usable (ensure_pool), record its facts
    REFRESH = "refresh"  # read its facts (pool_facts)
    DELETE = "delete"  # remove it from the host, then the record
    NOTHING = "nothing"


class VolumeAction(StrEnum):
    """One reconcile of a volume."""

    CREATE = "create"  # make it on the host (or adopt what a crashed pass made)
    RESIZE = "resize"  # grow it to spec.size_bytes (online when a running guest has it)
    REFRESH = "refresh"  # read its facts (volume_facts)
    DELETE = "delete"  # remove it from the host, then the record
    NOTHING = "nothing"


def plan_pool(
    status: PoolStatus, *, generation: int, deleting: bool, ensured_here: bool
) -> PoolAction:
    """What to do for a pool. `ensured_here`: this process already ensured it (a new
    process ensures every pool once, e.g. to mount a btrfs loop file after a reboot)."""
    if deleting:
        return PoolAction.DELETE
    if status.state == PoolState.FAILED:
        return PoolAction.NOTHING  # a pool that could not be made waits to be deleted
    if (
        status.state != PoolState.READY
        or status.observed_generation < generation
        or not ensured_here
    ):
        return PoolAction.ENSURE
    return PoolAction.REFRESH


def pool_needs_reconcile(status: PoolStatus, generation: int) -> bool:
    """True when a pool is not settled (being made, or a generation not acted on); deleting
    pools show state `deleting` and are not settled either."""
    return status.state in (PoolState.PENDING, PoolState.DELETING) or (
        status.observed_generation < generation
    )


def wanted_size(spec: VolumeSpec, status: VolumeStatus) -> int | None:
    """The size a ready volume should grow to, or None when it has it already."""
    if spec.size_bytes is not None and spec.size_bytes > status.virtual_size_bytes:
        return spec.size_bytes
    return None


def plan_volume(
    spec: VolumeSpec, status: VolumeStatus, *, generation: int, deleting: bool
) -> VolumeAction:
    """What to do for a volume."""
    if deleting:
        return VolumeAction.DELETE
    if status.state == VolumeState.PENDING:
        return VolumeAction.CREATE
    if status.state != VolumeState.READY:
        return VolumeAction.NOTHING  # a failed volume waits to be deleted
    if status.observed_generation < generation and wanted_size(spec, status) is not None:
        return VolumeAction.RESIZE
    return VolumeAction.REFRESH


def volume_needs_reconcile(
    spec: VolumeSpec, status: VolumeStatus, *, generation: int, deleting: bool
) -> bool:
    """True when a pass would change something (the resync's cheap filter; facts are
    refreshed on the slower host-refresh cadence)."""
    if status.observed_generation != generation:
        return True
    action = plan_volume(spec, status, generation=generation, deleting=deleting)
    return action not in (VolumeAction.REFRESH, VolumeAction.NOTHING)
