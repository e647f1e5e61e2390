"""A server stopped in the middle of snapshot and backup work (an agent call held at a gate,
then the controller stopped, as kill -9 would leave it): the next start finishes or rolls back
the work, leaves no partial file or tag, and the guest keeps running."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.snapshot_rules import partial_path
from corral.model.instance import InstanceState
from corral.model.operation import Operation
from corral.model.rpc import GuestRunState
from corral.model.rpc_snapshots import BackupRequest
from corral.model.snapshot import BackupCreate, BackupKind, RestoreRequest, SnapshotCreate
from corral.model.storage import InstanceDisk
from corral.store import Database, open_database, sqlite_url
from corral.store import backups as backup_store
from corral.store import operations as operation_store
from corral.store import snapshots as snapshot_store
from tests.controller.conftest import Harness, start_harness, stop_harness, wait_until
from tests.controller.gates import GatedAgent, gate
from tests.controller.test_snapshots import snapshots, tag_of, tags, take

Restart = Callable[..., Awaitable[Harness]]
WhileDown = Callable[[Database], None]


@pytest.fixture
async def restart(tmp_path: Path) -> AsyncIterator[Restart]:
    """`await restart(wrap=..., while_down=...)`: stop the running harness (if any), call
    `while_down(db)` on the store, and start a new one on the same data dir; the first call
    makes it, with `tiny` built and a running `vm` that has a qcow2 data volume `data`."""
    data_dir = tmp_path / "data"
    current: list[Harness] = []

    async def start(
        wrap: Any = None, while_down: Callable[[Database], None] | None = None
    ) -> Harness:
        if current:
            await stop_harness(current.pop())
        if while_down is not None:  # what a crash left in the store, written with no controller
            db = open_database(sqlite_url(data_dir / "corral.db"))
            try:
                while_down(db)
            finally:
                db.close()
        harness = await start_harness(data_dir, wrap=wrap)
        current.append(harness)
        return harness

    first = await start()
    await first.build_tiny()
    await first.create_volume("data")
    assert (await first.create("vm", disks=[InstanceDisk(volume="data")])).state == "succeeded"
    try:
        yield start
    finally:
        if current:
            await stop_harness(current.pop())
        shutil.rmtree(first.runtime_dir, ignore_errors=True)


async def held(h: Harness, op: Operation) -> None:
    """Wait until the gated agent call of `op` has been entered (the work is in flight)."""
    agent = h.agent
    assert isinstance(agent, GatedAgent)
    await wait_until(lambda: agent.entered.is_set(), 5, f"{op.kind} reaching the agent")
    assert not h.operation(op.id).done


async def guest_survived(h: Harness) -> None:
    """The guest ran through the 'crash' and the new controller adopted it."""
    seen = await h.agent.observe("vm")
    assert seen.state == GuestRunState.RUNNING
    await wait_until(lambda: h.instance("vm").status.ready, 5, "vm ready again")


async def test_a_snapshot_cut_short_before_it_was_taken_is_rolled_back(restart: Restart) -> None:
    h = await restart(wrap=gate("snapshot_create", call_through=False))
    op = h.controller.snapshots.create("vm", SnapshotCreate(name="s1"))
    await held(h, op)
    pid = h.instance("vm").status.pid

    h = await restart()
    assert h.controller.last_recovery.snapshots_rolled_back == ["vm/s1"]
    done = h.operation(op.id)
    assert done.state == "failed" and done.error is not None
    assert done.error.code == "interrupted" and "take it again" in done.error.message
    s1 = snapshots(h)["s1"]
    assert s1.state == "failed" and not s1.current
    assert await tags(h, "vm", "data") == []
    await guest_survived(h)
    assert h.instance("vm").status.pid == pid
    # the name can be used again once the failed record is deleted
    await h.wait_op(h.controller.snapshots.delete("vm", "s1"))
    assert (await take(h, "vm", "s1")).state == "succeeded"


async def test_a_snapshot_taken_just_before_the_crash_is_kept(restart: Restart) -> None:
    h = await restart(wrap=gate("snapshot_create", call_through=True))
    op = h.controller.snapshots.create("vm", SnapshotCreate(name="s1"))
    await held(h, op)

    h = await restart()
    assert h.controller.last_recovery.snapshots_kept == ["vm/s1"]
    assert h.operation(op.id).state == "succeeded"
    s1 = snapshots(h)["s1"]
    assert (s1.state, s1.current) == ("ready", True)
    assert await tags(h, "vm", "data") == [tag_of(h, "vm", "s1")]
    await guest_survived(h)


async def test_a_backup_cut_short_leaves_no_file_and_the_next_one_is_full(
    restart: Restart,
) -> None:
    h = await restart()
    assert (await h.wait_op(h.controller.backups.create("data", BackupCreate()))).state == (
        "succeeded"
    )

    def half_written(req: BackupRequest, *_: object) -> None:
        partial_path(req.target_path).write_bytes(b"half a backup")

    h = await restart(wrap=gate("backup", call_through=False, side_effect=half_written))
    op = h.controller.backups.create("data", BackupCreate())
    await held(h, op)
    backups = h.data_dir / "backups" / "data"
    assert (backups / "b0002.qcow2.partial").exists()

    h = await restart()
    assert h.controller.last_recovery.backups_rolled_back == ["data/b0002"]
    done = h.operation(op.id)
    assert done.state == "failed" and done.error is not None and done.error.code == "interrupted"
    assert [p.id for p in h.controller.backups.list("data")] == ["b0001"]
    assert sorted(p.name for p in backups.iterdir()) == ["b0001.qcow2"]
    await guest_survived(h)

    after = await h.wait_op(h.controller.backups.create("data", BackupCreate()))
    assert after.state == "succeeded", after
    newest = h.controller.backups.list("data")[-1]
    assert (newest.id, newest.kind) == ("b0003", "full")
    assert "cut short" in newest.reason


async def test_a_backup_the_agent_finished_unseen_is_removed(restart: Restart) -> None:
    h = await restart(wrap=gate("backup", call_through=True))
    op = h.controller.backups.create("data", BackupCreate())
    await held(h, op)
    h = await restart()
    assert h.operation(op.id).state == "failed"
    assert h.controller.backups.list("data") == []
    assert list((h.data_dir / "backups" / "data").iterdir()) == []
    await guest_survived(h)


async def test_a_revert_cut_short_fails_and_the_guest_boots_again(restart: Restart) -> None:
    h = await restart()
    await take(h, "vm", "s1")
    h = await restart(wrap=gate("snapshot_revert", call_through=False))
    op = h.controller.snapshots.revert("vm", "s1")
    await held(h, op)  # the guest was shut down for the revert; the revert is in flight
    assert h.instance("vm").status.state == InstanceState.STOPPED

    h = await restart()
    done = h.operation(op.id)
    assert done.state == "failed" and done.error is not None
    assert done.error.code == "interrupted" and "revert again" in done.error.message
    await wait_until(
        lambda: (
            h.instance("vm").status.state == InstanceState.RUNNING and h.instance("vm").status.ready
        ),
        5,
        "vm booted again",
    )
    assert h.instance("vm").spec.power == "running"


async def test_a_snapshot_deletion_cut_short_is_finished(restart: Restart) -> None:
    h = await restart()
    await take(h, "vm", "s1")
    await take(h, "vm", "s2")
    h = await restart(wrap=gate("snapshot_delete", call_through=False))
    op = h.controller.snapshots.delete("vm", "s1")
    await held(h, op)

    h = await restart()
    done = await h.wait_op(op)
    assert done.state == "succeeded", done
    assert set(snapshots(h)) == {"s2"}
    assert await tags(h, "vm", "data") == [tag_of(h, "vm", "s2")]


async def test_work_recorded_done_just_before_the_crash_finishes_its_operation(
    restart: Restart,
) -> None:
    """The record says done but the operation was not finished yet (they are two writes)."""
    h = await restart()
    uid, backups_dir = h.volume("data").uid, str(h.data_dir / "backups")
    ops: dict[str, str] = {}

    def crashed_between_the_two_writes(db: Database) -> None:
        with db.transaction() as session:
            ops["snapshot"] = operation_store.create_operation(
                session, "snapshot-create", "instance", "vm", params={"snapshot": "s1"}
            ).id
            snapshot_store.create_snapshot(session, "vm", SnapshotCreate(name="s1"), ["data"])
            snapshot_store.mark_snapshot_ready(session, "vm", "s1", quiesced=False, duration_ms=1)
            ops["backup"] = operation_store.create_operation(session, "backup", "volume", "data").id
            point = backup_store.start_backup(
                session, "data", uid, kind=BackupKind.FULL, parent=None, backups_dir=backups_dir,
                disk_path="", instance="vm", operation=ops["backup"], reason="first",
            )  # fmt: skip
            backup_store.finish_backup(
                session, "data", point.id, kind=BackupKind.FULL, parent=None, size_bytes=1,
                virtual_size_bytes=1, duration_ms=1.0, reason="first",
            )  # fmt: skip

    h = await restart(while_down=crashed_between_the_two_writes)
    assert h.controller.last_recovery.operations_interrupted == []
    assert h.operation(ops["snapshot"]).state == "succeeded"
    done = h.operation(ops["backup"])
    assert done.state == "succeeded" and done.result["backup"]["id"] == "b0001"


async def test_a_restore_cut_short_is_finished_as_a_volume_creation(restart: Restart) -> None:
    h = await restart()
    await h.wait_op(h.controller.backups.create("data", BackupCreate()))
    h = await restart(wrap=gate("create_volume", call_through=True))
    op = h.controller.backups.restore("data", "b0001", RestoreRequest(volume="copy"))
    await held(h, op)  # the agent made the volume; the server 'died' before recording it

    h = await restart()
    done = await h.wait_op(op)
    assert (done.state, done.kind) == ("succeeded", "backup-restore"), done
    assert h.volume("copy").status.state == "ready"
