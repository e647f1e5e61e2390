"""Pool and volume records: uniqueness, status vs spec columns, claims, dependents."""

from __future__ import annotations

import pytest

from corral.errors import Conflict, NotFound, PreconditionFailed
from corral.model.operation import OperationError
from corral.model.storage import (
    PoolDriver,
    PoolSpec,
    PoolState,
    PoolStatus,
    VolumeSource,
    VolumeSourceKind,
    VolumeSpec,
    VolumeState,
    VolumeStatus,
)
from corral.store import Database
from corral.store import pools as pool_store
from corral.store import volumes as volume_store

MIB = 1024**2


def _blank(size: int = 64 * MIB, pool: str = "default") -> VolumeSpec:
    return VolumeSpec(pool=pool, size_bytes=size)


def test_pools_are_unique_and_show_deleting_in_their_state(db: Database) -> None:
    with db.transaction() as s:
        created = pool_store.create_pool(s, "fast", PoolSpec(driver=PoolDriver.BTRFS,
                                                             size_bytes=512 * MIB))  # fmt: skip
        assert created.status.state == PoolState.PENDING and created.generation == 1
        with pytest.raises(Conflict) as dup:
            pool_store.create_pool(s, "fast", PoolSpec())
        assert (dup.value.code, dup.value.field) == ("already_exists", "name")
        pool_store.create_pool(s, "local", PoolSpec(path="/srv/pool"))
        assert pool_store.pool_with_path(s, "/srv/pool") == "local"
        assert pool_store.list_pool_names(s) == ["fast", "local"]
    status = PoolStatus(state=PoolState.READY, observed_generation=1, capacity_bytes=10)
    with db.transaction() as s:
        pool_store.update_pool_status(s, "fast", status)
        assert pool_store.get_pool(s, "fast").status == status
        assert pool_store.mark_pool_deleting(s, "fast").status.state == PoolState.DELETING
        pool_store.unmark_pool_deleting(s, "fast")
        assert pool_store.get_pool(s, "fast").status.state == PoolState.READY
        pool_store.delete_pool_record(s, "fast")
        pool_store.delete_pool_record(s, "fast")  # idempotent
        with pytest.raises(NotFound):
            pool_store.get_pool(s, "fast")


def test_volumes_are_unique_and_grow_with_optimistic_locking(db: Database) -> None:
    with db.transaction() as s:
        created = volume_store.create_volume(s, "data", _blank())
        assert created.status.state == VolumeState.PENDING and created.generation == 1
        with pytest.raises(Conflict) as dup:
            volume_store.create_volume(s, "data", _blank())
        assert (dup.value.code, dup.value.field) == ("already_exists", "name")
    with db.transaction() as s:
        grown = volume_store.update_volume_spec(s, "data", _blank(128 * MIB), expected_generation=1)
        assert grown.generation == 2 and grown.spec.size_bytes == 128 * MIB
    with pytest.raises(PreconditionFailed), db.transaction() as s:
        volume_store.update_volume_spec(s, "data", _blank(256 * MIB), expected_generation=1)
    with db.transaction() as s:
        volume_store.mark_volume_deleting(s, "data")
        assert volume_store.get_volume(s, "data").volume.status.state == VolumeState.DELETING
        with pytest.raises(Conflict):
            volume_store.update_volume_spec(s, "data", _blank(256 * MIB))


def test_status_writes_keep_attachment_owner_and_record_failures(db: Database) -> None:
    with db.transaction() as s:
        volume_store.create_volume(s, "vm1-root", _blank(), owner="vm1", instance="vm1")
        assert volume_store.set_attached_to(s, "vm1-root", "vm1")
        assert not volume_store.set_attached_to(s, "vm1-root", "vm1")
    # A reconcile that read the volume before it was attached must not detach it.
    stale = VolumeStatus(state=VolumeState.FAILED, message="no space")
    failure = OperationError(code="pool_full", message="no space")
    with db.transaction() as s:
        volume_store.update_volume_status(s, "vm1-root", stale, failure=failure)
        record = volume_store.get_volume(s, "vm1-root")
    assert record.volume.status.attached_to == "vm1"
    assert record.volume.status.owner == "vm1"
    assert record.volume.status.state == VolumeState.FAILED
    assert record.failure == failure and record.instance == "vm1"


def test_claims_follow_an_instances_disks_and_refuse_a_second_instance(db: Database) -> None:
    with db.transaction() as s:
        for name in ("a", "b", "c"):
            volume_store.create_volume(s, name, _blank())
        volume_store.claim_volumes(s, "vm1", ["a", "b"])
    with db.transaction() as s:
        with pytest.raises(Conflict) as taken:
            volume_store.claim_volumes(s, "vm2", ["b"])
        assert (taken.value.code, taken.value.field) == ("volume_attached", "spec.disks")
        with pytest.raises(NotFound):
            volume_store.claim_volumes(s, "vm2", ["ghost"])
    with db.transaction() as s:
        volume_store.claim_volumes(s, "vm1", ["b", "c"])  # a dropped, c added
        claims = {n: volume_store.get_volume(s, n).instance for n in ("a", "b", "c")}
    assert claims == {"a": None, "b": "vm1", "c": "vm1"}
    with db.transaction() as s:
        volume_store.set_attached_to(s, "a", "vm1")  # still being unplugged
        assert [r.name for r in volume_store.volumes_of_instance(s, "vm1")] == ["a", "b", "c"]
        assert volume_store.release_instance(s, "vm1") == []
        assert volume_store.volumes_of_instance(s, "vm1") == []


def test_dependents_of_volumes_images_and_pools_are_found(db: Database) -> None:
    def clone(kind: VolumeSourceKind, **source: str) -> VolumeSpec:
        return VolumeSpec(source=VolumeSource(kind=kind, **source))

    with db.transaction() as s:
        volume_store.create_volume(s, "base", _blank())
        volume_store.create_volume(s, "thin", clone(VolumeSourceKind.VOLUME, volume="base"))
        volume_store.create_volume(s, "full", clone(VolumeSourceKind.COPY, volume="base"))
        volume_store.create_volume(s, "root", clone(VolumeSourceKind.IMAGE, image="deb"),
                                   owner="vm1")  # fmt: skip
        volume_store.create_volume(s, "elsewhere", _blank(pool="fast"))
        assert volume_store.thin_clones_of(s, "base") == ["thin"]  # a copy needs no source
        assert volume_store.volumes_using_image(s, "deb") == ["root"]
        assert volume_store.volumes_in_pool(s, "fast") == ["elsewhere"]
        assert [v.name for v in volume_store.list_volumes(s, "fast")] == ["elsewhere"]
        assert len(volume_store.list_volumes(s)) == 5
        assert volume_store.release_instance(s, "vm1") == ["root"]
        volume_store.disown(s, "root")
        assert volume_store.get_volume(s, "root").volume.status.owner is None
