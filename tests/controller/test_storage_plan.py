"""plan_pool and plan_volume, one row per rule."""

from __future__ import annotations

import pytest

from corral.controller.storage_plan import (
    PoolAction,
    VolumeAction,
    plan_pool,
    plan_volume,
    pool_needs_reconcile,
    volume_needs_reconcile,
)
from corral.model.storage import (
    PoolState,
    PoolStatus,
    VolumeSource,
    VolumeSourceKind,
    VolumeSpec,
    VolumeState,
    VolumeStatus,
)

P = PoolState
V = VolumeState
MIB = 1024**2


@pytest.mark.parametrize(
    ("state", "observed", "deleting", "ensured", "expected"),
    [
        (P.PENDING, 0, False, False, PoolAction.ENSURE),  # new pool
        (P.READY, 1, False, False, PoolAction.ENSURE),  # first pass of a new server process
        (P.READY, 1, False, True, PoolAction.REFRESH),  # steady: keep the facts fresh
        (P.READY, 0, False, True, PoolAction.ENSURE),  # a generation not acted on yet
        (P.FAILED, 1, False, False, PoolAction.NOTHING),  # waits to be deleted
        (P.READY, 1, True, True, PoolAction.DELETE),
        (P.FAILED, 1, True, False, PoolAction.DELETE),
        (P.PENDING, 0, True, False, PoolAction.DELETE),  # deleted before it was made
    ],
)
def test_plan_pool(
    state: PoolState, observed: int, deleting: bool, ensured: bool, expected: PoolAction
) -> None:
    status = PoolStatus(state=state, observed_generation=observed)
    assert plan_pool(status, generation=1, deleting=deleting, ensured_here=ensured) == expected


@pytest.mark.parametrize(
    ("state", "size", "spec_size", "observed", "generation", "deleting", "expected"),
    [
        (V.PENDING, 0, 64, 0, 1, False, VolumeAction.CREATE),
        (V.READY, 64, 64, 1, 1, False, VolumeAction.REFRESH),
        (V.READY, 64, None, 1, 1, False, VolumeAction.REFRESH),  # a clone at its source's size
        (V.READY, 64, 128, 1, 2, False, VolumeAction.RESIZE),
        (V.READY, 64, 128, 2, 2, False, VolumeAction.REFRESH),  # a failed resize is not retried
        (V.READY, 128, 128, 1, 2, False, VolumeAction.REFRESH),  # grown already (crash after)
        (V.FAILED, 0, 64, 1, 1, False, VolumeAction.NOTHING),  # waits to be deleted
        (V.READY, 64, 64, 1, 1, True, VolumeAction.DELETE),
        (V.FAILED, 0, 64, 1, 1, True, VolumeAction.DELETE),
        (V.PENDING, 0, 64, 0, 1, True, VolumeAction.DELETE),
    ],
)
def test_plan_volume(
    state: VolumeState,
    size: int,
    spec_size: int | None,
    observed: int,
    generation: int,
    deleting: bool,
    expected: VolumeAction,
) -> None:
    clone = VolumeSource(kind=VolumeSourceKind.VOLUME, volume="base")
    size_bytes = spec_size * MIB if spec_size else None
    spec = VolumeSpec(size_bytes=size_bytes, source=clone if spec_size is None else VolumeSource())
    status = VolumeStatus(state=state, virtual_size_bytes=size * MIB, observed_generation=observed)
    assert plan_volume(spec, status, generation=generation, deleting=deleting) == expected


def test_steady_volumes_are_not_queued_by_the_resync() -> None:
    spec = VolumeSpec(size_bytes=64 * MIB)
    ready = VolumeStatus(state=V.READY, virtual_size_bytes=64 * MIB, observed_generation=1)
    assert not volume_needs_reconcile(spec, ready, generation=1, deleting=False)
    assert volume_needs_reconcile(spec, ready, generation=2, deleting=False)
    assert volume_needs_reconcile(spec, ready, generation=1, deleting=True)
    assert volume_needs_reconcile(spec, VolumeStatus(), generation=1, deleting=False)


@pytest.mark.parametrize(
    ("state", "observed", "expected"),
    [
        (P.PENDING, 0, True),
        (P.READY, 0, True),
        (P.READY, 1, False),  # steady: refreshed on the slower storage cadence
        (P.FAILED, 1, False),
        (P.DELETING, 1, True),
    ],
)
def test_pool_needs_reconcile(state: PoolState, observed: int, expected: bool) -> None:
    status = PoolStatus(state=state, observed_generation=observed)
    assert pool_needs_reconcile(status, 1) == expected
