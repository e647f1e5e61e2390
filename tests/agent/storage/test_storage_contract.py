"""One contract for every storage driver: the fake, `dir` and `btrfs` keep the same promises.

Outcomes are checked in the facts every driver reports and, for the real drivers, in the image
files themselves (bytes read back through qemu-io, files and mounts left on the host).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.agent.storage import StorageBackend, make_storage_backend
from corral.agent.storage.files import MARKER
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.model.rpc import PoolConfig, VolumeRequest
from tests.agent.storage.conftest import (
    MiB,
    Pools,
    loops_under,
    make_image,
    mounts_under,
    reads_pattern,
    run,
    write_pattern,
)


def blank(pool: StorageBackend, name: str, size: int = 64 * MiB, fmt: str = "qcow2") -> None:
    pool.create_volume(VolumeRequest(pool=pool.name, name=name, size_bytes=size, format=fmt))


def copy_of_image(pool: StorageBackend, name: str, image: Path, fmt: str = "qcow2") -> None:
    """A volume holding the image's data on its own (so the tests can clone/copy volumes)."""
    pool.create_volume(
        VolumeRequest(pool=pool.name, name=name, source_path=str(image), full_copy=True, format=fmt)
    )


def pool_files(pool: StorageBackend) -> list[str]:
    return sorted(entry.name for entry in pool.path.iterdir()) if pool.path.exists() else []


# -- create ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_blank_volume_has_the_requested_size(pools: Pools, fmt: str) -> None:
    pool = pools.make()
    blank(pool, "data-1", 64 * MiB, fmt)

    facts = pool.volume_facts("data-1")
    assert (facts.format, facts.virtual_size_bytes, facts.backing) == (fmt, 64 * MiB, None)
    assert facts.allocated_bytes < 4 * MiB  # blank volumes are thin
    assert Path(facts.path) == pool.volume_path("data-1") == pool.path / f"data-1.{fmt}"
    assert [v.name for v in pool.list_volumes()] == ["data-1"]
    if pools.real:
        assert Path(facts.path).is_file()
        assert reads_pattern(facts.path, fmt, 0, 0, 64 * MiB)


def test_thin_clone_of_an_image_reads_its_bytes_and_allocates_little(
    pools: Pools, scratch: Path
) -> None:
    image = make_image(scratch / "images" / "base.qcow2", 64 * MiB, data=8 * MiB)
    pool = pools.make()
    before = pool.facts().allocated_bytes

    clone = pool.create_volume(
        VolumeRequest(pool=pool.name, name="vm1-root", source_path=str(image), size_bytes=96 * MiB)
    )
    after_clone = pool.facts().allocated_bytes
    copy_of_image(pool, "vm1-copy", image)
    after_copy = pool.facts().allocated_bytes

    assert clone.virtual_size_bytes == 96 * MiB  # grown on the way
    assert clone.backing == str(image)  # the image is outside the pool: a qcow2 overlay
    assert after_copy - after_clone >= 8 * MiB
    assert after_clone - before < (after_copy - after_clone) / 4
    if pools.real:
        assert reads_pattern(clone.path, "qcow2", 0xAB, 0, 8 * MiB)
        assert reads_pattern(clone.path, "qcow2", 0, 8 * MiB, 88 * MiB)


def test_thin_clone_of_a_volume_shares_its_data_but_not_its_writes(
    pools: Pools, scratch: Path
) -> None:
    image = make_image(scratch / "base.qcow2", 64 * MiB, data=8 * MiB)
    pool = pools.make()
    copy_of_image(pool, "golden", image)
    before = pool.facts().allocated_bytes

    clone = pool.create_volume(VolumeRequest(pool=pool.name, name="work", source_volume="golden"))

    assert clone.virtual_size_bytes == 64 * MiB
    assert pool.facts().allocated_bytes - before < 2 * MiB
    if pools.real:
        assert reads_pattern(clone.path, "qcow2", 0xAB, 0, 8 * MiB)
        write_pattern(clone.path, "qcow2", 0xCD, 0, MiB)
        assert reads_pattern(clone.path, "qcow2", 0xCD, 0, MiB)
        assert reads_pattern(pool.volume_path("golden"), "qcow2", 0xAB, 0, 8 * MiB)


def test_full_copy_is_independent_of_its_source(pools: Pools, scratch: Path) -> None:
    image = make_image(scratch / "base.qcow2", 64 * MiB, data=4 * MiB)
    pool = pools.make()
    copy_of_image(pool, "golden", image)
    thin = pool.create_volume(VolumeRequest(pool=pool.name, name="thin", source_volume="golden"))

    copy = pool.create_volume(
        VolumeRequest(pool=pool.name, name="copy", source_volume="thin", full_copy=True)
    )

    assert copy.backing is None
    assert copy.virtual_size_bytes == thin.virtual_size_bytes
    assert copy.allocated_bytes >= 4 * MiB
    if pools.real:
        write_pattern(copy.path, "qcow2", 0xCD, 0, MiB)
        assert reads_pattern(pool.volume_path("golden"), "qcow2", 0xAB, 0, 4 * MiB)
        assert reads_pattern(thin.path, "qcow2", 0xAB, 0, 4 * MiB)
    pool.delete_volume("thin")
    pool.delete_volume("golden")  # nothing depends on it any more
    assert [v.name for v in pool.list_volumes()] == ["copy"]
    if pools.real:
        assert reads_pattern(copy.path, "qcow2", 0xCD, 0, MiB)
        assert reads_pattern(copy.path, "qcow2", 0xAB, MiB, 3 * MiB)


def test_a_copy_from_a_snapshot_tag_has_the_snapshot_bytes_not_later_writes(
    pools: Pools,
) -> None:
    pool = pools.make()
    blank(pool, "disk", 64 * MiB)
    path = pool.volume_path("disk")
    if pools.real:
        write_pattern(path, "qcow2", 0xAA, 0, 2 * MiB)
        run("qemu-img", "snapshot", "-c", "t-1", str(path))
        write_pattern(path, "qcow2", 0xBB, 0, 2 * MiB)
    request = VolumeRequest(
        pool=pool.name, name="copy", source_volume="disk", source_snapshot_tag="t-1",
        full_copy=True,
    )  # fmt: skip

    copy = pool.create_volume(request)

    assert (copy.format, copy.backing, copy.virtual_size_bytes) == ("qcow2", None, 64 * MiB)
    assert pool.create_volume(request) == copy  # a retried request
    if pools.real:
        assert reads_pattern(copy.path, "qcow2", 0xAA, 0, 2 * MiB)
        assert reads_pattern(path, "qcow2", 0xBB, 0, 2 * MiB)
        pool.delete_volume("disk")  # the copy does not depend on it
        assert reads_pattern(copy.path, "qcow2", 0xAA, 0, 2 * MiB)
        with pytest.raises(HostError):
            pool.create_volume(request.model_copy(update={"name": "c2", "source_volume": "copy"}))
    with pytest.raises(InvalidInput) as bad_tag:
        pool.create_volume(request.model_copy(update={"name": "c3", "source_snapshot_tag": "a/b"}))
    assert bad_tag.value.field == "spec.source.snapshot"
    with pytest.raises(InvalidInput):
        pool.create_volume(request.model_copy(update={"name": "c4", "full_copy": False}))
    assert "c3" not in [v.name for v in pool.list_volumes()]


def test_clones_of_the_same_format_follow_the_reflink_capability(
    pools: Pools, scratch: Path
) -> None:
    image = make_image(scratch / "base.qcow2", 16 * MiB, data=2 * MiB)
    pool = pools.make()
    copy_of_image(pool, "golden", image)
    clone = pool.create_volume(VolumeRequest(pool=pool.name, name="clone", source_volume="golden"))

    if pool.capabilities.reflink:
        assert clone.backing is None  # shares extents, not fate
        pool.delete_volume("golden")
        if pools.real:
            assert reads_pattern(clone.path, "qcow2", 0xAB, 0, 2 * MiB)
    else:
        assert clone.backing == str(pool.volume_path("golden"))
        with pytest.raises(Conflict) as refused:
            pool.delete_volume("golden")
        assert refused.value.code == "volume_in_use"


def test_raw_thin_clones_need_a_reflink(pools: Pools, scratch: Path) -> None:
    pool = pools.make()
    blank(pool, "raw-src", 16 * MiB, "raw")
    image = make_image(scratch / "base.qcow2", 16 * MiB)
    request = VolumeRequest(pool=pool.name, name="raw-clone", source_volume="raw-src", format="raw")

    if pool.capabilities.reflink:
        assert pool.create_volume(request).backing is None
    else:
        with pytest.raises(InvalidInput) as refused:
            pool.create_volume(request)
        assert (refused.value.code, refused.value.field) == (
            "thin_clone_needs_qcow2",
            "spec.format",
        )
    with pytest.raises(InvalidInput) as from_image:  # a qcow2 image cannot become a raw clone
        pool.create_volume(
            VolumeRequest(pool=pool.name, name="raw-root", source_path=str(image), format="raw")
        )
    assert from_image.value.code == "thin_clone_needs_qcow2"


def test_create_again_returns_the_volume_and_other_formats_conflict(pools: Pools) -> None:
    pool = pools.make()
    blank(pool, "data-1", 32 * MiB)

    again = pool.create_volume(
        VolumeRequest(pool=pool.name, name="data-1", size_bytes=32 * MiB, format="qcow2")
    )
    assert again.virtual_size_bytes == 32 * MiB
    with pytest.raises(Conflict) as other_format:
        blank(pool, "data-1", 32 * MiB, "raw")
    assert other_format.value.code == "volume_exists"
    assert pool.facts().volumes == 1


def test_missing_sources_are_not_found(pools: Pools, scratch: Path) -> None:
    pool = pools.make()
    with pytest.raises(NotFound) as no_volume:
        pool.create_volume(VolumeRequest(pool=pool.name, name="c", source_volume="nothing"))
    assert (no_volume.value.code, no_volume.value.field) == ("unknown_volume", "spec.source.volume")
    with pytest.raises(NotFound) as no_image:
        pool.create_volume(
            VolumeRequest(pool=pool.name, name="c", source_path=str(scratch / "gone.qcow2"))
        )
    assert (no_image.value.code, no_image.value.field) == ("unknown_image", "spec.source.image")
    with pytest.raises(NotFound) as no_target:
        pool.volume_facts("nothing")
    assert no_target.value.code == "unknown_volume"
    assert pool.facts().volumes == 0


@pytest.mark.parametrize(
    "bad", ["a/b", "..", "../etc", "x\x00y", "x\ny", "tab\tname", "", "Upper", "-dash", "a" * 64]
)
def test_bad_names_are_refused_everywhere(pools: Pools, bad: str) -> None:
    pool = pools.make()
    blank(pool, "good", 16 * MiB)
    attempts: list[Callable[[], object]] = [
        lambda: blank(pool, bad, 16 * MiB),
        lambda: pool.create_volume(VolumeRequest(pool=pool.name, name="c", source_volume=bad)),
        lambda: pool.volume_facts(bad),
        lambda: pool.resize_volume(bad, 32 * MiB),
        lambda: pool.delete_volume(bad),
        lambda: pool.volume_path(bad),
        lambda: make_storage_backend(PoolConfig(name=bad, driver=pools.driver), pools.pools_dir),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInput) as refused:
            attempt()
        assert refused.value.code == "invalid_name"
    assert [v.name for v in pool.list_volumes()] == ["good"]
    if pools.real:
        assert pool_files(pool) == [MARKER, "good.qcow2"]


@pytest.mark.parametrize("path", ["relative/x.qcow2", "/tmp/../etc/passwd", "/tmp/a\nb"])
def test_bad_source_paths_are_refused(pools: Pools, path: str) -> None:
    pool = pools.make()
    with pytest.raises(InvalidInput) as refused:
        pool.create_volume(VolumeRequest(pool=pool.name, name="c", source_path=path))
    assert (refused.value.code, refused.value.field) == ("invalid_path", "spec.source.image")


# -- resize ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_resize_grows_and_refuses_to_shrink(pools: Pools, fmt: str) -> None:
    pool = pools.make()
    blank(pool, "data-1", 32 * MiB, fmt)

    grown = pool.resize_volume("data-1", 96 * MiB)
    assert grown.virtual_size_bytes == 96 * MiB
    assert pool.resize_volume("data-1", 96 * MiB).virtual_size_bytes == 96 * MiB  # no-op
    with pytest.raises(InvalidInput) as shrink:
        pool.resize_volume("data-1", 64 * MiB)
    assert (shrink.value.code, shrink.value.field) == ("shrink_refused", "spec.size_bytes")
    with pytest.raises(InvalidInput) as unaligned:
        pool.resize_volume("data-1", 128 * MiB + 1)
    assert unaligned.value.code == "size_unaligned"
    with pytest.raises(NotFound):
        pool.resize_volume("nothing", 128 * MiB)
    assert pool.volume_facts("data-1").virtual_size_bytes == 96 * MiB
    if pools.real:
        assert reads_pattern(grown.path, fmt, 0, 0, 96 * MiB)


def test_a_clone_smaller_than_its_source_is_refused(pools: Pools, scratch: Path) -> None:
    image = make_image(scratch / "base.qcow2", 64 * MiB)
    pool = pools.make()
    with pytest.raises(InvalidInput) as refused:
        pool.create_volume(
            VolumeRequest(pool=pool.name, name="c", source_path=str(image), size_bytes=32 * MiB)
        )
    assert (refused.value.code, refused.value.field) == ("shrink_refused", "spec.size_bytes")
    assert pool.facts().volumes == 0


# -- delete ----------------------------------------------------------------------------------------


def test_delete_is_refused_while_a_clone_depends_on_the_volume(pools: Pools) -> None:
    pool = pools.make()
    blank(pool, "base", 16 * MiB, "raw")  # a qcow2 clone of a raw volume is an overlay everywhere
    clone = pool.create_volume(VolumeRequest(pool=pool.name, name="clone", source_volume="base"))
    assert clone.backing == str(pool.volume_path("base"))

    with pytest.raises(Conflict) as refused:
        pool.delete_volume("base")
    assert refused.value.code == "volume_in_use"
    assert "clone" in refused.value.message

    pool.delete_volume("clone")
    pool.delete_volume("base")
    pool.delete_volume("base")  # already gone: no-op
    assert pool.list_volumes() == []


# -- pool ------------------------------------------------------------------------------------------


def test_pool_facts_count_volumes_sizes_and_allocation(pools: Pools, scratch: Path) -> None:
    image = make_image(scratch / "base.qcow2", 32 * MiB, data=6 * MiB)
    pool = pools.make()
    empty = pool.facts()
    assert (empty.name, empty.driver, empty.volumes, empty.provisioned_bytes) == (
        "p1",
        pools.driver,
        0,
        0,
    )
    assert empty.path == str(pool.path)
    assert 0 <= empty.used_bytes <= empty.capacity_bytes

    blank(pool, "a", 64 * MiB)
    blank(pool, "b", 16 * MiB, "raw")
    copy_of_image(pool, "c", image)
    pool.create_volume(VolumeRequest(pool=pool.name, name="d", source_volume="c"))

    facts = pool.facts()
    assert facts.volumes == 4
    assert facts.provisioned_bytes == (64 + 16 + 32 + 32) * MiB
    assert 6 * MiB <= facts.allocated_bytes < 16 * MiB
    assert facts.used_bytes <= facts.capacity_bytes


def test_destroy_refuses_a_pool_with_volumes_and_leaves_nothing_when_empty(
    pools: Pools, scratch: Path
) -> None:
    pool = pools.make()
    blank(pool, "a", 16 * MiB)
    with pytest.raises(Conflict) as refused:
        pool.destroy()
    assert refused.value.code == "pool_not_empty"
    assert pool.volume_facts("a").virtual_size_bytes == 16 * MiB  # still usable

    pool.delete_volume("a")
    pool.destroy()
    pool.destroy()  # already gone: no-op

    assert not pool.path.exists()
    assert list(pools.pools_dir.iterdir()) == []
    assert mounts_under(scratch) == []
    assert loops_under(scratch) == []


def test_a_new_backend_object_finds_the_pool_as_it_was(pools: Pools) -> None:
    pool = pools.make()
    blank(pool, "a", 16 * MiB)
    pool.ensure()  # idempotent

    again = pools.reopen(pool)
    again.ensure()
    assert [v.name for v in again.list_volumes()] == ["a"]
    assert again.facts().volumes == 1


def test_ensure_removes_unfinished_volume_files(pools: Pools) -> None:
    pool = pools.make()
    leftover = pool.path / ".x.qcow2.1234abcd.partial"
    leftover.write_bytes(b"half a volume")  # what a kill -9 during create leaves

    pools.reopen(pool).ensure()

    assert not leftover.exists()


def test_two_pools_cannot_share_a_directory(pools: Pools, scratch: Path) -> None:
    shared = scratch / "shared"
    if pools.driver == "btrfs":  # a btrfs pool on a path needs that path on btrfs
        loop_pool = pools.make("holder")
        shared = loop_pool.path / "shared"
    pools.make("first", path=shared)
    with pytest.raises(Conflict) as refused:
        pools.make("second", path=shared)
    assert refused.value.code == "pool_path_in_use"


# -- a full pool -----------------------------------------------------------------------------------


def _small_pool(pools: Pools, tmpfs: Path) -> StorageBackend:
    if pools.driver == "dir":
        return pools.make("small", path=tmpfs / "pool")
    return pools.make("small", size_bytes=48 * MiB if pools.driver == "fake" else 128 * MiB)


def test_a_full_pool_fails_with_pool_full_and_keeps_what_it_had(
    pools: Pools, scratch: Path, tmpfs: Path
) -> None:
    pool = _small_pool(pools, tmpfs)
    facts = pool.facts()
    data = int((facts.capacity_bytes - facts.used_bytes) * 0.6) // MiB * MiB
    image = make_image(scratch / "big.qcow2", 256 * MiB, data=data)
    copy_of_image(pool, "first", image)  # fits
    files_before = pool_files(pool)

    with pytest.raises(HostError) as full:
        pool.create_volume(
            VolumeRequest(pool=pool.name, name="second", source_volume="first", full_copy=True)
        )

    assert full.value.code == "pool_full"
    assert "no space left" in full.value.message
    assert [v.name for v in pool.list_volumes()] == ["first"]
    assert pool_files(pool) == files_before  # no partial file
    if pools.real:
        assert reads_pattern(pool.volume_path("first"), "qcow2", 0xAB, 0, data)
    pool.delete_volume("first")  # and the pool works on
    blank(pool, "after", 16 * MiB)
    assert pool.facts().volumes == 1


def test_the_fake_and_real_pools_agree_on_paths(pools: Pools) -> None:
    pool = pools.make()
    blank(pool, "a", 16 * MiB)
    assert pool.volume_facts("a").path == os.path.join(pool.path, "a.qcow2")
