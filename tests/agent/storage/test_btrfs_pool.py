"""What only the btrfs driver does: its loop file and mount (made, re-mounted after a reboot,
undone on failure), pools on an existing btrfs mount, and chain-free clones of images there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.storage.btrfs import BtrfsPool
from corral.agent.storage.host import loop_devices_for, mount_at
from corral.errors import HostError, InvalidInput
from corral.model.rpc import PoolConfig, VolumeRequest
from tests.agent.storage.conftest import (
    MiB,
    Pools,
    loops_under,
    make_image,
    mounts_under,
    reads_pattern,
    run,
    simulate_reboot,
)


@pytest.fixture
def btrfs(scratch: Path) -> Iterator[Pools]:
    made = Pools("btrfs", scratch)
    try:
        yield made
    finally:
        made.teardown()


def test_a_loop_pool_is_a_fallocated_btrfs_file_mounted_under_pools_dir(btrfs: Pools) -> None:
    pool = btrfs.make("fast", size_bytes=256 * MiB)
    loop_file = btrfs.pools_dir / "fast.btrfs"

    mounted = mount_at(btrfs.pools_dir / "fast")
    assert mounted is not None and mounted.fstype == "btrfs"
    assert loop_devices_for(loop_file) == [mounted.source]
    assert loop_file.stat().st_size == 256 * MiB
    assert loop_file.stat().st_blocks * 512 >= 256 * MiB  # reserved, not sparse
    assert pool.facts().capacity_bytes == 256 * MiB


def test_ensure_mounts_the_pool_again_after_a_reboot(btrfs: Pools, scratch: Path) -> None:
    image = make_image(scratch / "base.qcow2", 32 * MiB, data=2 * MiB)
    pool = btrfs.make("fast")
    pool.create_volume(
        VolumeRequest(pool="fast", name="data-1", source_path=str(image), full_copy=True)
    )
    simulate_reboot(pool.path, btrfs.pools_dir / "fast.btrfs")
    assert mount_at(pool.path) is None and loops_under(scratch) == []

    after = btrfs.reopen(pool)
    with pytest.raises(HostError) as not_ready:  # never writes into the bare mount point
        after.volume_facts("data-1")
    assert not_ready.value.code == "pool_not_ready"
    after.ensure()

    assert [v.name for v in after.list_volumes()] == ["data-1"]
    assert reads_pattern(after.volume_path("data-1"), "qcow2", 0xAB, 0, 2 * MiB)
    assert len(loops_under(scratch)) == 1


def test_ensure_reuses_a_loop_device_that_is_still_attached(btrfs: Pools, scratch: Path) -> None:
    pool = btrfs.make("fast")
    run("umount", str(pool.path))
    (device,) = loops_under(scratch)

    btrfs.reopen(pool).ensure()

    assert loops_under(scratch) == [device]
    mounted = mount_at(pool.path)
    assert mounted is not None and mounted.source == device


def test_a_failed_ensure_leaves_no_loop_file_or_device(btrfs: Pools, scratch: Path) -> None:
    taken = btrfs.pools_dir / "fast"
    taken.mkdir(parents=True)
    run("mount", "-t", "tmpfs", "-o", "size=1m", "someone-else", str(taken))

    with pytest.raises(HostError) as refused:
        BtrfsPool(
            PoolConfig(name="fast", driver="btrfs", size_bytes=256 * MiB), btrfs.pools_dir
        ).ensure()

    assert refused.value.code == "pool_mount_conflict"
    assert not (btrfs.pools_dir / "fast.btrfs").exists()
    assert loops_under(scratch) == []
    run("umount", str(taken))
    assert sorted(p.name for p in btrfs.pools_dir.iterdir()) == ["fast"]


def test_destroy_of_an_unmounted_pool_still_removes_everything(btrfs: Pools, scratch: Path) -> None:
    pool = btrfs.make("fast")
    simulate_reboot(pool.path, btrfs.pools_dir / "fast.btrfs")

    btrfs.reopen(pool).destroy()

    assert list(btrfs.pools_dir.iterdir()) == []
    assert mounts_under(scratch) == [] and loops_under(scratch) == []


def test_a_loop_pool_needs_a_size(btrfs: Pools) -> None:
    pool = BtrfsPool(PoolConfig(name="nosize", driver="btrfs"), btrfs.pools_dir)
    with pytest.raises(InvalidInput) as refused:
        pool.ensure()
    assert (refused.value.code, refused.value.field) == ("size_required", "spec.size_bytes")


def test_a_path_that_is_not_on_btrfs_is_refused(btrfs: Pools, scratch: Path) -> None:
    pool = BtrfsPool(
        PoolConfig(name="ext", driver="btrfs", path=str(scratch / "ext4-dir")), btrfs.pools_dir
    )
    with pytest.raises(InvalidInput) as refused:
        pool.ensure()
    assert (refused.value.code, refused.value.field) == ("not_btrfs", "spec.path")
    assert not (scratch / "ext4-dir").exists()


def test_images_on_the_same_btrfs_are_cloned_without_a_backing_chain(
    btrfs: Pools, scratch: Path
) -> None:
    # A btrfs mount that holds both the images and a pool directory, as a host might have it.
    mount = scratch / "mnt"
    mount.mkdir()
    holder = btrfs.make("holder", size_bytes=384 * MiB)
    run("mount", "--bind", str(holder.path), str(mount))
    image = make_image(mount / "images" / "base.qcow2", 64 * MiB, data=32 * MiB)
    pool = btrfs.make("onmount", path=mount / "pool")
    os.sync()
    used_before = pool.facts().used_bytes

    clone = pool.create_volume(
        VolumeRequest(pool="onmount", name="vm1-root", source_path=str(image), size_bytes=128 * MiB)
    )
    os.sync()

    assert clone.backing is None  # a reflink: no chain, the image may go away
    assert clone.virtual_size_bytes == 128 * MiB
    assert pool.facts().used_bytes - used_before < 8 * MiB  # the 32 MiB are shared
    image.unlink()
    assert reads_pattern(clone.path, "qcow2", 0xAB, 0, 32 * MiB)
    assert pool.facts().allocated_bytes >= 32 * MiB
    pool.delete_volume("vm1-root")
    pool.destroy()
    assert not (mount / "pool").exists()  # the directory it made is gone, the images stay
    assert (mount / "images").is_dir()
    run("umount", str(mount))
