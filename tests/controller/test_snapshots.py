"""Snapshots through the controller on the fake compute backend: the tree, revert of running and
stopped guests, deletion that keeps the tree, checks at the door, and instance deletion."""

from __future__ import annotations

import pytest

from corral.controller.disk_steps import volume_attachment
from corral.errors import Conflict, InvalidInput, NotFound
from corral.model.instance import InstanceState
from corral.model.operation import Operation, OperationState
from corral.model.rpc_snapshots import SnapshotRequest
from corral.model.snapshot import Snapshot, SnapshotCreate, SnapshotState
from corral.model.storage import InstanceDisk, VolumeFormat
from corral.store import snapshots as snapshot_store
from tests.controller.conftest import Harness

MIB = 1024**2


async def vm_with_data(h: Harness, name: str = "vm", volume: str = "data") -> None:
    """A running instance with one qcow2 data volume."""
    assert (await h.create_volume(volume)).state == OperationState.SUCCEEDED
    op = await h.create(name, disks=[InstanceDisk(volume=volume)])
    assert op.state == OperationState.SUCCEEDED, op


async def take(h: Harness, instance: str, name: str, **body: object) -> Operation:
    """Take a snapshot and wait for its operation."""
    body_model = SnapshotCreate.model_validate({"name": name, **body})
    return await h.wait_op(h.controller.snapshots.create(instance, body_model))


def snapshots(h: Harness, instance: str = "vm") -> dict[str, Snapshot]:
    """The instance's snapshots by name."""
    return {s.name: s for s in h.controller.snapshots.list(instance)}


async def tags(h: Harness, instance: str, volume: str) -> list[str]:
    """The snapshot tags on a volume's file, as the agent reads them."""
    disk = volume_attachment(h.volume(volume), read_only=False, boot=False)
    found = await h.agent.snapshot_tags(SnapshotRequest(instance=instance, tag="x", disks=[disk]))
    return found[disk.id]


def tag_of(h: Harness, instance: str, name: str) -> str:
    """The tag a snapshot has on disk."""
    with h.db.transaction() as session:
        return snapshot_store.get_snapshot(session, instance, name).tag


async def test_snapshots_form_a_tree_and_the_newest_is_current(harness: Harness) -> None:
    await vm_with_data(harness)
    first = await take(harness, "vm", "s1")
    assert (first.state, first.kind, first.target) == ("succeeded", "snapshot-create", "vm"), first
    assert first.result["snapshot"]["name"] == "s1"
    s1 = snapshots(harness)["s1"]
    assert (s1.state, s1.current, s1.parent, s1.volumes) == ("ready", True, None, ["data"])
    assert s1.quiesced  # the fake guest has an agent that can freeze

    assert (await take(harness, "vm", "s2", description="after s1")).state == "succeeded"
    tree = snapshots(harness)
    assert (tree["s2"].parent, tree["s2"].current, tree["s1"].current) == ("s1", True, False)
    assert tree["s2"].description == "after s1"
    assert sorted(await tags(harness, "vm", "data")) == sorted(
        [tag_of(harness, "vm", "s1"), tag_of(harness, "vm", "s2")]
    )
    types = harness.event_types("vm")
    assert types.count("snapshot.created") == 2 and "snapshot.state" in types
    assert harness.controller.snapshots.get("vm", "s1").name == "s1"


async def test_revert_to_a_disk_only_snapshot_reboots_a_running_guest(harness: Harness) -> None:
    await vm_with_data(harness)
    await take(harness, "vm", "s1")
    await take(harness, "vm", "s2")
    before = harness.instance("vm").status.pid
    op = await harness.wait_op(harness.controller.snapshots.revert("vm", "s1"))
    assert (op.state, op.kind) == ("succeeded", "snapshot-revert"), op
    assert "back at snapshot s1" in op.message and "runs again" in op.message
    assert op.result["memory_restored"] is False
    after = harness.instance("vm")
    assert after.status.state == InstanceState.RUNNING and after.status.ready
    assert after.status.pid != before  # shut down, reverted offline, booted again
    assert after.spec.power == "running"
    tree = snapshots(harness)
    assert tree["s1"].current and not tree["s2"].current

    # a snapshot after a revert branches the tree at the reverted one
    await take(harness, "vm", "s3")
    assert snapshots(harness)["s3"].parent == "s1"
    assert "instance.exited" not in harness.event_types("vm")  # not taken for a crash


async def test_revert_to_a_memory_snapshot_keeps_the_guest_running(harness: Harness) -> None:
    await vm_with_data(harness)
    done = await take(harness, "vm", "live", memory=True)
    assert done.state == "succeeded", done
    live = snapshots(harness)["live"]
    assert live.memory and not live.quiesced
    pid = harness.instance("vm").status.pid
    op = await harness.wait_op(harness.controller.snapshots.revert("vm", "live"))
    assert op.state == "succeeded", op
    assert op.result["memory_restored"] is True
    assert harness.instance("vm").status.pid == pid  # no reboot
    assert harness.instance("vm").status.state == InstanceState.RUNNING


async def test_a_memory_snapshot_of_a_stopped_instance_reverts_its_disks_only(
    harness: Harness,
) -> None:
    await vm_with_data(harness)
    await take(harness, "vm", "live", memory=True)
    stop = harness.controller.instances.stop("vm", force=True, timeout_s=None)
    stopped = await harness.wait_op(stop)
    assert stopped.state == "succeeded"
    with pytest.raises(Conflict) as refused:
        harness.controller.snapshots.create("vm", SnapshotCreate(name="m2", memory=True))
    assert (refused.value.code, refused.value.field) == ("invalid_state", "memory")

    op = await harness.wait_op(harness.controller.snapshots.revert("vm", "live"))
    assert op.state == "succeeded", op
    assert "memory state can only be loaded into a running guest" in op.message
    assert op.result["memory_restored"] is False
    assert harness.instance("vm").status.state == InstanceState.STOPPED

    offline = await take(harness, "vm", "cold")
    assert offline.state == "succeeded", offline
    cold = snapshots(harness)["cold"]
    assert (cold.parent, cold.quiesced) == ("live", False)
    assert tag_of(harness, "vm", "cold") in await tags(harness, "vm", "data")


async def test_deleting_a_snapshot_keeps_the_tree(harness: Harness) -> None:
    await vm_with_data(harness)
    for name in ("s1", "s2", "s3"):
        await take(harness, "vm", name)
    middle = tag_of(harness, "vm", "s2")
    op = await harness.wait_op(harness.controller.snapshots.delete("vm", "s2"))
    assert (op.state, op.kind) == ("succeeded", "snapshot-delete"), op
    tree = snapshots(harness)
    assert set(tree) == {"s1", "s3"}
    assert (tree["s3"].parent, tree["s3"].current) == ("s1", True)
    assert middle not in await tags(harness, "vm", "data")

    await harness.wait_op(harness.controller.snapshots.delete("vm", "s3"))
    assert snapshots(harness)["s1"].current  # the deleted current one's parent
    assert harness.event_types("vm").count("snapshot.deleted") == 2
    with pytest.raises(NotFound):
        harness.controller.snapshots.get("vm", "s3")


async def test_snapshot_requests_are_checked_at_the_door(harness: Harness) -> None:
    await vm_with_data(harness)
    await harness.create_volume("rawdisk", format=VolumeFormat.RAW)
    await harness.create("bare")
    await harness.create("mixed", disks=[InstanceDisk(volume="rawdisk")])
    create = harness.controller.snapshots.create

    with pytest.raises(InvalidInput) as raw:
        create("mixed", SnapshotCreate(name="s1"))
    assert raw.value.code == "snapshot_needs_qcow2" and "rawdisk" in raw.value.message
    with pytest.raises(InvalidInput) as bare:
        create("bare", SnapshotCreate(name="s1"))
    assert bare.value.code == "snapshot_needs_qcow2" and "no writable disk" in bare.value.message
    with pytest.raises(NotFound):
        create("ghost", SnapshotCreate(name="s1"))

    await take(harness, "vm", "s1")
    with pytest.raises(Conflict) as twice:
        create("vm", SnapshotCreate(name="s1"))
    assert (twice.value.code, twice.value.field) == ("already_exists", "name")
    with pytest.raises(NotFound):
        harness.controller.snapshots.revert("vm", "nope")
    with pytest.raises(NotFound):
        harness.controller.snapshots.delete("vm", "nope")
    with pytest.raises(NotFound):
        harness.controller.snapshots.list("ghost")

    # a raw volume attached read-only is left out: it never changes
    await harness.create_volume("rodisk", format=VolumeFormat.RAW)
    await harness.create_volume("data2")
    both = [InstanceDisk(volume="data2"), InstanceDisk(volume="rodisk", read_only=True)]
    await harness.create("ro", disks=both)
    assert (await take(harness, "ro", "s1")).state == "succeeded"
    assert snapshots(harness, "ro")["s1"].volumes == ["data2"]


async def test_a_memory_snapshot_of_a_guest_that_died_fails_and_says_why(
    harness: Harness,
) -> None:
    await vm_with_data(harness)
    harness.fake.simulate_crash("vm")  # the spec still says running when the request comes
    op = await take(harness, "vm", "late", memory=True)
    assert op.state == "failed" and op.error is not None
    assert op.error.code == "invalid_state" and "not running" in op.error.message
    late = snapshots(harness)["late"]
    assert late.state == SnapshotState.FAILED and "not running" in late.message
    assert not late.current
    deleted = await harness.wait_op(harness.controller.snapshots.delete("vm", "late"))
    assert deleted.state == "succeeded" and "late" not in snapshots(harness)


async def test_deleting_an_instance_deletes_its_snapshots(harness: Harness) -> None:
    await vm_with_data(harness)
    await take(harness, "vm", "s1")
    await take(harness, "vm", "s2", memory=True)
    assert len(await tags(harness, "vm", "data")) == 2
    with pytest.raises(Conflict):  # no snapshot while it is being deleted
        op = harness.controller.instances.delete("vm")
        harness.controller.snapshots.create("vm", SnapshotCreate(name="s3"))
    assert (await harness.wait_op(op)).state == "succeeded"
    assert not harness.exists("vm")
    with harness.db.transaction() as session:
        assert snapshot_store.list_snapshots(session, "vm") == []
    assert harness.volume("data").status.attached_to is None
    assert await tags(harness, "vm", "data") == []  # the volume outlives the instance, clean
    assert harness.event_types("vm").count("snapshot.deleted") == 2
