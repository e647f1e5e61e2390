"""Instances with disks, on the fake compute backend (its guests show their disks in
/sys/block) and the real `dir` pool: root volumes of disk images, hot-plug, online growth."""

from __future__ import annotations

from typing import Any

import pytest

from corral.controller.disks import disk_id
from corral.errors import Conflict, InvalidInput
from corral.model.instance import (
    InstanceCreate,
    InstanceSpec,
    InstanceSpecPatch,
    InstanceState,
    Machine,
    PowerState,
    RootDisk,
)
from corral.model.operation import OperationState
from corral.model.rpc import LaunchRequest
from corral.model.storage import InstanceDisk, VolumeSpecPatch
from tests.controller.conftest import Harness, start_harness, stop_harness, wait_until

MIB = 1024**2


async def _sectors(harness: Harness, instance: str, volume: str) -> int:
    """The size in 512-byte sectors the guest shows for the disk with `volume`'s serial."""
    for dev in (await harness.guest_text(instance, "ls", "/sys/block")).split():
        if await harness.guest_text(instance, "cat", f"/sys/block/{dev}/serial") == volume:
            return int(await harness.guest_text(instance, "cat", f"/sys/block/{dev}/size"))
    raise AssertionError(f"{instance} has no disk {volume}")


async def _devices(harness: Harness, instance: str) -> list[str]:
    return (await harness.guest_text(instance, "ls", "/sys/block")).split()


async def _create(harness: Harness, name: str, image: str = "tiny", **extra: Any) -> Any:
    root = extra.pop("root_disk", None)
    body = InstanceCreate(name=name, spec=InstanceSpec(image=image, **extra), root_disk=root)
    return await harness.wait_op(harness.controller.instances.create(body))


async def test_a_disk_image_instance_boots_from_its_own_root_volume(harness: Harness) -> None:
    disk = harness.add_disk_image("deb", 256 * MIB)
    op = await _create(harness, "vm1", image="deb", root_disk=RootDisk(size_bytes=512 * MIB))
    assert op.state == OperationState.SUCCEEDED, op
    vm = harness.instance("vm1")
    assert vm.spec.disks == [InstanceDisk(volume="vm1-root", boot=True)]
    root = harness.volume("vm1-root")
    assert root.status.state == "ready"
    assert root.status.owner == "vm1" and root.status.attached_to == "vm1"
    assert root.status.backing == str(disk)
    assert root.status.virtual_size_bytes == 512 * MIB
    assert root.spec.source.image == "deb"
    assert await _sectors(harness, "vm1", "vm1-root") == 512 * MIB // 512
    seen = await harness.agent.observe("vm1")
    assert seen.disks == [disk_id("vm1-root")]
    with pytest.raises(Conflict) as owned:
        harness.controller.volumes.delete("vm1-root")
    assert owned.value.code == "volume_attached"

    deleted = await harness.wait_op(harness.controller.instances.delete("vm1"))
    assert deleted.state == OperationState.SUCCEEDED, deleted
    assert not harness.volume_exists("vm1-root")
    assert not (harness.data_dir / "pools" / "default" / "vm1-root.qcow2").exists()
    assert "volume.deleted" in harness.event_types("vm1-root")


async def test_a_root_disk_smaller_than_its_image_is_refused(harness: Harness) -> None:
    harness.add_disk_image("deb", 256 * MIB)
    body = InstanceCreate(
        name="tiny-root", spec=InstanceSpec(image="deb"), root_disk=RootDisk(size_bytes=64 * MIB)
    )
    with pytest.raises(InvalidInput) as refused:
        harness.controller.instances.create(body)
    assert (refused.value.code, refused.value.field) == ("shrink_refused", "root_disk.size_bytes")
    assert not harness.exists("tiny-root") and not harness.volume_exists("tiny-root-root")
    elsewhere = body.model_copy(update={"root_disk": RootDisk(pool="nowhere")})
    with pytest.raises(InvalidInput) as unknown:
        harness.controller.instances.create(elsewhere)
    assert (unknown.value.code, unknown.value.field) == ("unknown_pool", "root_disk.pool")
    long_name = InstanceCreate(name="x" * 60, spec=InstanceSpec(image="deb"))
    with pytest.raises(InvalidInput) as too_long:
        harness.controller.instances.create(long_name)
    assert (too_long.value.code, too_long.value.field) == ("invalid_name", "name")


async def test_cloud_init_images_get_a_seed_and_others_do_not(harness: Harness) -> None:
    harness.add_disk_image("cloudy", 64 * MIB, cloud_init=True)
    launched: list[LaunchRequest] = []
    launch = harness.agent.launch

    async def recording_launch(req: LaunchRequest) -> Any:
        launched.append(req)
        return await launch(req)

    harness.agent.launch = recording_launch  # type: ignore[method-assign]
    spec = {"ssh_keys": ["ssh-ed25519 AAAA test"], "user_data": "#cloud-config\n"}
    assert (await _create(harness, "c1", image="cloudy", **spec)).state == "succeeded"
    assert (await _create(harness, "t1")).state == "succeeded"
    seed = launched[0].cloud_init
    assert seed is not None
    assert seed.hostname == "c1" and seed.instance_id == harness.instance("c1").uid
    assert seed.ssh_keys == ["ssh-ed25519 AAAA test"] and seed.user_data == "#cloud-config\n"
    assert [d.boot for d in launched[0].disks] == [True]
    assert launched[0].disks[0].serial == "c1-root"
    assert launched[1].cloud_init is None and launched[1].disks == []


async def test_volumes_are_hot_plugged_moved_and_grown_online(harness: Harness) -> None:
    await harness.create_volume("data-1", size_bytes=64 * MIB)
    await _create(harness, "vm1")
    await _create(harness, "vm2")
    assert await _devices(harness, "vm1") == []

    op, _ = harness.controller.instances.patch(
        "vm1", InstanceSpecPatch(disks=[InstanceDisk(volume="data-1")]), None
    )
    done = await harness.wait_op(op)
    assert done.state == OperationState.SUCCEEDED, done
    assert await _sectors(harness, "vm1", "data-1") == 64 * MIB // 512
    assert harness.volume("data-1").status.attached_to == "vm1"
    assert await harness.controller.resync() == 0  # steady: nothing to plug again
    assert harness.controller.enqueue_storage(refresh=False) == 0
    for refused in (
        lambda: harness.controller.volumes.delete("data-1"),
        lambda: harness.controller.volumes.attach("data-1", "vm2"),
    ):
        with pytest.raises(Conflict) as caught:
            refused()
        assert caught.value.code == "volume_attached"

    detached = await harness.wait_op(harness.controller.volumes.detach("data-1"))
    assert detached.state == OperationState.SUCCEEDED, detached
    assert detached.target == "vm1" and detached.kind == "update"
    assert await _devices(harness, "vm1") == []
    assert harness.volume("data-1").status.attached_to is None

    moved = await harness.wait_op(harness.controller.volumes.attach("data-1", "vm2"))
    assert moved.state == OperationState.SUCCEEDED, moved
    assert await _sectors(harness, "vm2", "data-1") == 64 * MIB // 512
    grown, _ = harness.controller.volumes.resize(
        "data-1", VolumeSpecPatch(size_bytes=96 * MIB), None
    )
    assert (await harness.wait_op(grown)).state == OperationState.SUCCEEDED
    assert await _sectors(harness, "vm2", "data-1") == 96 * MIB // 512
    assert harness.volume("data-1").status.virtual_size_bytes == 96 * MIB

    # deleting vm2 detaches the volume it does not own, and keeps it
    await harness.wait_op(harness.controller.instances.delete("vm2"))
    volume = harness.volume("data-1")
    assert volume.status.state == "ready" and volume.status.attached_to is None
    assert (await harness.wait_op(harness.controller.volumes.delete("data-1"))).state == (
        OperationState.SUCCEEDED
    )


async def test_disks_of_a_stopped_instance_are_recorded_and_used_at_start(
    harness: Harness,
) -> None:
    await harness.create_volume("data-2")
    await _create(harness, "cold", power=PowerState.STOPPED)
    op, _ = harness.controller.instances.patch(
        "cold", InstanceSpecPatch(disks=[InstanceDisk(volume="data-2", read_only=True)]), None
    )
    assert (await harness.wait_op(op)).state == OperationState.SUCCEEDED
    assert harness.volume("data-2").status.attached_to == "cold"
    assert harness.instance("cold").status.state == InstanceState.STOPPED
    started = await harness.wait_op(harness.controller.instances.start("cold"))
    assert started.state == OperationState.SUCCEEDED, started
    assert await _sectors(harness, "cold", "data-2") == 64 * MIB // 512
    (dev,) = await _devices(harness, "cold")
    assert (await harness.guest_text("cold", "cat", f"/sys/block/{dev}/ro")).strip() == "1"


async def test_bad_disks_are_refused_with_the_field(harness: Harness) -> None:
    await _create(harness, "vm1")
    with pytest.raises(InvalidInput) as unknown:
        harness.controller.instances.patch(
            "vm1", InstanceSpecPatch(disks=[InstanceDisk(volume="ghost")]), None
        )
    assert (unknown.value.code, unknown.value.field) == ("unknown_volume", "spec.disks")
    await harness.create_volume("shared")
    await harness.wait_op(harness.controller.volumes.attach("shared", "vm1"))
    body = InstanceCreate(
        name="vm2", spec=InstanceSpec(image="tiny", disks=[InstanceDisk(volume="shared")])
    )
    with pytest.raises(Conflict) as taken:
        harness.controller.instances.create(body)
    assert (taken.value.code, taken.value.field) == ("volume_attached", "spec.disks")
    assert not harness.exists("vm2")


async def test_a_failed_hotplug_fails_the_operation_once_and_does_not_loop(
    harness: Harness,
) -> None:
    await harness.create_volume("data-3")
    await _create(harness, "micro", machine=Machine.MICROVM)
    op, _ = harness.controller.instances.patch(
        "micro", InstanceSpecPatch(disks=[InstanceDisk(volume="data-3")]), None
    )
    failed = await harness.wait_op(op)
    assert failed.state == OperationState.FAILED
    assert failed.error is not None and failed.error.code == "hotplug_failed"
    assert "microvm" in failed.error.message
    vm = harness.instance("micro")
    condition = vm.status.condition("DisksAttached")
    assert condition is not None and not condition.status and condition.reason == "HotplugFailed"
    assert vm.status.state == InstanceState.RUNNING  # the guest itself is fine
    assert harness.volume("data-3").status.attached_to is None
    queued = await harness.controller.resync()
    assert queued == 0  # a failed hot-plug waits for a new generation
    # Taking the disk out of the spec again is the way back.
    back, _ = harness.controller.instances.patch("micro", InstanceSpecPatch(disks=[]), None)
    assert (await harness.wait_op(back)).state == OperationState.SUCCEEDED


async def test_a_root_volume_that_fails_fails_the_instance_create(harness: Harness) -> None:
    disk = harness.add_disk_image("gone", 64 * MIB)
    body = InstanceCreate(name="vm1", spec=InstanceSpec(image="gone"))
    disk.unlink()  # the image's disk vanished after the image was recorded
    op = await harness.wait_op(harness.controller.instances.create(body))
    assert op.state == OperationState.FAILED
    assert op.error is not None and op.error.code == "unknown_image"
    assert harness.instance("vm1").status.state == InstanceState.FAILED
    assert harness.volume("vm1-root").status.state == "failed"
    done = await harness.wait_op(harness.controller.instances.delete("vm1"))
    assert done.state == OperationState.SUCCEEDED
    await wait_until(lambda: not harness.volume_exists("vm1-root"), 5, "root volume gone")


async def test_a_controller_restart_keeps_guests_disks_and_attachments(tmp_path: Any) -> None:
    data = tmp_path / "data"
    first = await start_harness(data)
    await first.build_tiny()
    await first.create_volume("kept")
    body = InstanceCreate(
        name="vm1", spec=InstanceSpec(image="tiny", disks=[InstanceDisk(volume="kept")])
    )
    assert (await first.wait_op(first.controller.instances.create(body))).state == "succeeded"
    pid = first.instance("vm1").status.pid
    await stop_harness(first)

    second = await start_harness(data)
    try:
        await wait_until(lambda: second.pool("default").status.state == "ready", 5, "pool")
        assert await second.controller.resync() == 0
        assert second.instance("vm1").status.pid == pid
        assert second.volume("kept").status.attached_to == "vm1"
        assert await _sectors(second, "vm1", "kept") == 64 * MIB // 512
    finally:
        await stop_harness(second)
