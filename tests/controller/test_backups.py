"""Backups through the controller on the fake compute backend: chains of full and incremental
points, deletion rules, restores to new volumes, points that outlive their volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import Conflict, InvalidInput, NotFound
from corral.model.operation import Operation, OperationState
from corral.model.snapshot import BackupCreate, BackupPoint, RestoreRequest
from corral.model.storage import InstanceDisk, VolumeState
from tests.controller.conftest import Harness

MIB = 1024**2


async def attached_volume(h: Harness, volume: str = "data") -> None:
    """A qcow2 volume attached to a running instance `vm`."""
    assert (await h.create_volume(volume)).state == OperationState.SUCCEEDED
    assert (await h.create("vm", disks=[InstanceDisk(volume=volume)])).state == "succeeded"


async def back_up(h: Harness, volume: str = "data", *, full: bool = False) -> Operation:
    """Back the volume up and wait for the operation."""
    return await h.wait_op(h.controller.backups.create(volume, BackupCreate(full=full)))


def points(h: Harness, volume: str = "data") -> list[BackupPoint]:
    """The volume's restore points, oldest first."""
    return h.controller.backups.list(volume)


async def test_backups_of_a_running_guest_are_full_then_incremental(harness: Harness) -> None:
    await attached_volume(harness)
    first = await back_up(harness)
    assert (first.state, first.kind, first.target_kind) == ("succeeded", "backup", "volume")
    assert first.result["backup"]["id"] == "b0001"
    await back_up(harness)
    await back_up(harness)
    await back_up(harness, full=True)
    chain = points(harness)
    assert [(p.id, p.kind, p.parent) for p in chain] == [
        ("b0001", "full", None),
        ("b0002", "incremental", "b0001"),
        ("b0003", "incremental", "b0002"),
        ("b0004", "full", None),
    ]
    assert chain[0].reason == "the first backup of the volume"
    assert chain[1].reason == "" and chain[3].reason == "a full backup was asked for"
    assert all(p.size_bytes > 0 and p.duration_ms is not None for p in chain)  # from the agent
    backups = harness.data_dir / "backups" / "data"
    assert sorted(p.name for p in backups.iterdir()) == [f"b000{i}.qcow2" for i in range(1, 5)]
    assert all(Path(p.path).parent == backups for p in chain)
    assert chain[0].virtual_size_bytes == 64 * MIB
    assert harness.controller.backups.get("data", "b0002").parent == "b0001"
    assert harness.event_types("data").count("backup.created") == 4
    progress = [e for e in harness.seen if e.type == "operation.progress" and e.name == first.id]
    assert any("b0001" in str(e.data.get("message")) for e in progress)


async def test_a_detached_volume_is_backed_up_in_full(harness: Harness) -> None:
    await harness.create_volume("loose")
    await back_up(harness, "loose")
    second = await back_up(harness, "loose")
    assert second.state == "succeeded", second
    kinds = [(p.kind, p.parent) for p in points(harness, "loose")]
    assert kinds == [("full", None), ("full", None)]
    assert "stopped" in points(harness, "loose")[1].reason  # the agent says why


async def test_only_the_newest_point_or_a_whole_chain_is_deleted(harness: Harness) -> None:
    await attached_volume(harness)
    for _ in range(3):
        await back_up(harness)
    with pytest.raises(Conflict) as in_use:
        harness.controller.backups.delete("data", "b0002", chain=False)
    assert in_use.value.code == "backup_in_use" and "b0003" in in_use.value.message
    with pytest.raises(NotFound):
        harness.controller.backups.delete("data", "b0009", chain=False)

    newest = await harness.wait_op(harness.controller.backups.delete("data", "b0003", chain=False))
    assert (newest.state, newest.kind) == ("succeeded", "backup-delete"), newest
    assert [p.id for p in points(harness)] == ["b0001", "b0002"]
    assert not Path(harness.data_dir / "backups" / "data" / "b0003.qcow2").exists()

    # the dirty bitmap followed b0003, so the next backup starts a new chain
    after = await back_up(harness)
    point = points(harness)[-1]
    assert (after.state, point.id, point.kind) == ("succeeded", "b0004", "full")
    assert "b0003" in point.reason

    whole = await harness.wait_op(harness.controller.backups.delete("data", "b0001", chain=True))
    assert whole.state == "succeeded", whole
    assert [p.id for p in points(harness)] == ["b0004"]
    assert sorted(p.name for p in (harness.data_dir / "backups" / "data").iterdir()) == [
        "b0004.qcow2"
    ]


async def test_a_point_restores_to_a_new_volume_even_after_its_volume_is_gone(
    harness: Harness,
) -> None:
    await harness.create_volume("data", size_bytes=32 * MIB)
    await back_up(harness)
    op = harness.controller.backups.restore("data", "b0001", RestoreRequest(volume="copy"))
    assert (op.kind, op.target_kind, op.target) == ("backup-restore", "volume", "copy")
    done = await harness.wait_op(op)
    assert done.state == "succeeded", done
    copy = harness.volume("copy")
    assert copy.status.state == VolumeState.READY
    assert copy.status.virtual_size_bytes == 32 * MIB
    assert copy.status.backing is None  # a full copy, independent of the backup files

    with pytest.raises(Conflict) as taken:
        harness.controller.backups.restore("data", "b0001", RestoreRequest(volume="copy"))
    assert (taken.value.code, taken.value.field) == ("already_exists", "volume")
    with pytest.raises(InvalidInput) as pool:
        harness.controller.backups.restore(
            "data", "b0001", RestoreRequest(volume="other", pool="ghost")
        )
    assert (pool.value.code, pool.value.field) == ("unknown_pool", "pool")

    assert (await harness.wait_op(harness.controller.volumes.delete("data"))).state == "succeeded"
    assert [p.id for p in points(harness)] == ["b0001"]  # points outlive their volume
    again = await harness.wait_op(
        harness.controller.backups.restore("data", "b0001", RestoreRequest(volume="data"))
    )
    assert again.state == "succeeded", again
    # the volume made anew under the old name starts its own chain
    await back_up(harness)
    newest = points(harness)[-1]
    assert (newest.id, newest.kind) == ("b0002", "full")
    assert "made anew" in newest.reason


async def test_backup_requests_are_checked_at_the_door(harness: Harness) -> None:
    with pytest.raises(NotFound):
        harness.controller.backups.create("ghost", BackupCreate())
    with pytest.raises(NotFound):
        harness.controller.backups.list("ghost")
    await harness.create_volume("data")
    assert points(harness) == []
    with pytest.raises(NotFound):
        harness.controller.backups.get("data", "b0001")
    with pytest.raises(NotFound):
        harness.controller.backups.restore("data", "b0001", RestoreRequest(volume="x"))
    deleting = harness.controller.volumes.delete("data")
    with pytest.raises(Conflict) as gone:
        harness.controller.backups.create("data", BackupCreate())
    assert gone.value.code == "invalid_state"
    await harness.wait_op(deleting)
