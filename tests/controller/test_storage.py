"""Pools and volumes through the controller, on the fake compute backend and real `dir` pools
(qemu-img files in the test's data dir) or the `fake` pool driver where a full pool is needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.errors import Conflict, InvalidInput
from corral.model.operation import OperationState
from corral.model.rpc import VolumeRequest
from corral.model.storage import (
    PoolCreate,
    PoolDriver,
    PoolSpec,
    VolumeCreate,
    VolumeSource,
    VolumeSourceKind,
    VolumeSpec,
    VolumeSpecPatch,
    VolumeState,
)
from corral.store import volumes as volume_store
from tests.controller.conftest import Harness, start_harness, stop_harness, wait_until

MIB = 1024**2


async def test_the_default_pool_is_made_at_first_start_and_never_deleted(
    harness: Harness,
) -> None:
    pool = await harness.wait_pool_ready()
    assert pool.spec.driver == PoolDriver.DIR
    assert pool.status.path == str(harness.data_dir / "pools" / "default")
    assert pool.status.capacity_bytes > 0
    assert pool.status.observed_generation == 1
    with pytest.raises(Conflict) as refused:
        harness.controller.pools.delete("default")
    assert refused.value.code == "invalid_state"
    assert "pool.created" in harness.event_types("default")


async def test_a_blank_volume_is_made_grown_and_deleted(harness: Harness) -> None:
    op = await harness.create_volume("data-1", size_bytes=64 * MIB)
    assert op.state == OperationState.SUCCEEDED, op
    assert op.kind == "volume-create" and op.target_kind == "volume"
    volume = harness.volume("data-1")
    assert volume.status.state == VolumeState.READY
    assert volume.status.virtual_size_bytes == 64 * MIB
    assert volume.status.format == "qcow2"
    assert volume.status.observed_generation == 1
    path = Path(volume.status.path or "")
    assert path.is_file() and path.parent == harness.data_dir / "pools" / "default"
    await wait_until(lambda: harness.pool("default").status.volumes == 1, 5, "pool count")

    grown, changed = harness.controller.volumes.resize(
        "data-1", VolumeSpecPatch(size_bytes=128 * MIB), '"1"'
    )
    assert changed.generation == 2
    done = await harness.wait_op(grown)
    assert done.state == OperationState.SUCCEEDED, done
    assert harness.volume("data-1").status.virtual_size_bytes == 128 * MIB

    with pytest.raises(InvalidInput) as shrink:
        harness.controller.volumes.resize("data-1", VolumeSpecPatch(size_bytes=64 * MIB), None)
    assert (shrink.value.code, shrink.value.field) == ("shrink_refused", "spec.size_bytes")
    same = harness.controller.volumes.resize("data-1", VolumeSpecPatch(size_bytes=128 * MIB), None)
    assert same[0].state == OperationState.SUCCEEDED  # nothing to do

    deleted = await harness.wait_op(harness.controller.volumes.delete("data-1"))
    assert deleted.state == OperationState.SUCCEEDED, deleted
    assert not harness.volume_exists("data-1")
    assert not path.exists()
    assert harness.event_types("data-1")[-1] == "volume.deleted"


async def test_thin_clones_pin_their_source_and_copies_do_not(harness: Harness) -> None:
    await harness.create_volume("base", size_bytes=32 * MIB)
    clone = VolumeSpec(source=VolumeSource(kind=VolumeSourceKind.VOLUME, volume="base"))
    assert (await harness.create_volume("clone", **clone.model_dump())).state == "succeeded"
    copy = VolumeSpec(
        size_bytes=48 * MIB, source=VolumeSource(kind=VolumeSourceKind.COPY, volume="base")
    )
    assert (await harness.create_volume("copy", **copy.model_dump())).state == "succeeded"
    base = harness.volume("base")
    assert harness.volume("clone").status.backing == base.status.path
    assert harness.volume("clone").status.virtual_size_bytes == 32 * MIB
    assert harness.volume("copy").status.backing is None
    assert harness.volume("copy").status.virtual_size_bytes == 48 * MIB

    with pytest.raises(Conflict) as pinned:
        harness.controller.volumes.delete("base")
    assert pinned.value.code == "volume_in_use"
    smaller = VolumeSpec(
        size_bytes=16 * MIB, source=VolumeSource(kind=VolumeSourceKind.COPY, volume="base")
    )
    with pytest.raises(InvalidInput) as shrink:
        harness.controller.volumes.create(VolumeCreate(name="small-copy", spec=smaller))
    assert (shrink.value.code, shrink.value.field) == ("shrink_refused", "spec.size_bytes")

    await harness.wait_op(harness.controller.volumes.delete("clone"))
    done = await harness.wait_op(harness.controller.volumes.delete("base"))
    assert done.state == OperationState.SUCCEEDED
    assert harness.volume("copy").status.state == VolumeState.READY


@pytest.mark.parametrize(
    ("spec", "code", "field"),
    [
        ({"pool": "nowhere", "size_bytes": 64 * MIB}, "unknown_pool", "spec.pool"),
        (
            {"source": {"kind": "image", "image": "ghost"}},
            "unknown_image",
            "spec.source.image",
        ),
        (
            {"source": {"kind": "image", "image": "tiny"}},
            "not_a_disk_image",
            "spec.source.image",
        ),
        (
            {"source": {"kind": "volume", "volume": "ghost"}},
            "unknown_volume",
            "spec.source.volume",
        ),
        ({"size_bytes": 63 * 1024**4}, "insufficient_capacity", "spec.size_bytes"),
    ],
)
async def test_volumes_that_cannot_be_made_are_refused_at_once(
    harness: Harness, spec: dict[str, object], code: str, field: str
) -> None:
    await harness.wait_pool_ready()
    body = VolumeCreate.model_validate({"name": "bad", "spec": spec})
    with pytest.raises((InvalidInput, Conflict)) as refused:
        harness.controller.volumes.create(body)
    assert (refused.value.code, refused.value.field) == (code, field)
    assert not harness.volume_exists("bad")


async def test_a_full_pool_fails_the_create_and_leaves_a_deletable_record(
    harness: Harness,
) -> None:
    small = PoolCreate(name="small", spec=PoolSpec(driver=PoolDriver.FAKE, size_bytes=128 * MIB))
    assert (await harness.wait_op(harness.controller.pools.create(small))).state == "succeeded"
    # An image whose file takes more than the pool holds (its header says 64 MiB).
    disk = harness.add_disk_image("fat", 64 * MIB)
    with disk.open("r+b") as handle:
        os.posix_fallocate(handle.fileno(), disk.stat().st_size, 140 * MIB)
    thin = VolumeSpec(pool="small", source=VolumeSource(kind=VolumeSourceKind.IMAGE, image="fat"))
    assert (await harness.create_volume("thin", **thin.model_dump())).state == "succeeded"
    copy = VolumeSpec(pool="small", source=VolumeSource(kind=VolumeSourceKind.COPY, volume="thin"))

    op = await harness.create_volume("fat-copy", **copy.model_dump())

    assert op.state == OperationState.FAILED
    assert op.error is not None and op.error.code == "pool_full"
    assert "no space left" in op.error.message
    volume = harness.volume("fat-copy")
    assert volume.status.state == VolumeState.FAILED
    assert "no space left" in volume.status.message
    facts = await harness.agent.pool_facts("small")
    assert facts.volumes == 1  # only `thin`: nothing of the failed copy is left
    deleted = await harness.wait_op(harness.controller.volumes.delete("fat-copy"))
    assert deleted.state == OperationState.SUCCEEDED
    assert not harness.volume_exists("fat-copy")


async def test_a_pool_with_volumes_is_not_deleted(harness: Harness, tmp_path: Path) -> None:
    place = tmp_path / "extra-pool"
    body = PoolCreate(name="extra", spec=PoolSpec(path=str(place)))
    assert (await harness.wait_op(harness.controller.pools.create(body))).state == "succeeded"
    assert harness.pool("extra").status.path == str(place)
    with pytest.raises(Conflict) as same_place:
        harness.controller.pools.create(PoolCreate(name="again", spec=PoolSpec(path=str(place))))
    assert (same_place.value.code, same_place.value.field) == ("already_exists", "spec.path")
    await harness.create_volume("in-extra", pool="extra")
    with pytest.raises(Conflict) as refused:
        harness.controller.pools.delete("extra")
    assert refused.value.code == "pool_not_empty"
    await harness.wait_op(harness.controller.volumes.delete("in-extra"))
    op = await harness.wait_op(harness.controller.pools.delete("extra"))
    assert op.state == OperationState.SUCCEEDED, op
    assert op.kind == "pool-delete"
    with pytest.raises(Exception, match="does not exist"):
        harness.pool("extra")
    assert (harness.data_dir / "pools" / "extra.pool.json").exists() is False


async def test_a_create_cut_short_after_the_host_made_the_volume_is_adopted(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = await start_harness(data)
    await first.wait_pool_ready()
    # The server "died" after the agent made the volume but before the status was written.
    facts = await first.agent.create_volume(
        VolumeRequest(pool="default", name="orphan", size_bytes=32 * MIB)
    )
    await stop_harness(first)
    second = await start_harness(data)
    try:
        with second.db.transaction() as session:
            volume_store.create_volume(session, "orphan", VolumeSpec(size_bytes=32 * MIB))
        second.controller.enqueue_volume("orphan")
        volume = await wait_until(
            lambda: v if (v := second.volume("orphan")).status.state == "ready" else None,
            5,
            "adopted",
        )
        assert volume.status.path == facts.path
    finally:
        await stop_harness(second)
