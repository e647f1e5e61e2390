"""Snapshot and backup records: the tree kept on removal, tags, point ids, chain state,
and the upgrade of a 0002 store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from corral.errors import Conflict, NotFound
from corral.model.names import name_problem
from corral.model.snapshot import BackupKind, SnapshotCreate, SnapshotState
from corral.model.storage import VolumeSpec
from corral.store import Database, open_database, sqlite_url
from corral.store import backups as backup_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.database import make_engine, migrate


def _take(db: Database, name: str, parent: str | None) -> None:
    with db.transaction() as s:
        snapshot_store.create_snapshot(s, "vm", SnapshotCreate(name=name), ["data"])
        snapshot_store.begin_snapshot(s, "vm", name, parent, ["data"])
        snapshot_store.mark_snapshot_ready(s, "vm", name, quiesced=True, duration_ms=3.0)


def _tree(db: Database) -> dict[str, tuple[str | None, bool]]:
    with db.transaction() as s:
        return {x.name: (x.parent, x.current) for x in snapshot_store.list_snapshots(s, "vm")}


def test_removing_a_snapshot_keeps_the_tree_and_moves_current(db: Database) -> None:
    _take(db, "a", None)
    _take(db, "b", "a")
    _take(db, "c", "b")
    with db.transaction() as s:
        snapshot_store.set_current(s, "vm", "b")
    _take(db, "d", "b")  # a branch: b has two children, d is current
    assert _tree(db) == {
        "a": (None, False), "b": ("a", False), "c": ("b", False), "d": ("b", True),
    }  # fmt: skip
    with db.transaction() as s:
        snapshot_store.remove_snapshot(s, "vm", "b")
    assert _tree(db) == {"a": (None, False), "c": ("a", False), "d": ("a", True)}
    with db.transaction() as s:
        snapshot_store.remove_snapshot(s, "vm", "d")
        snapshot_store.remove_snapshot(s, "vm", "d")  # idempotent
    assert _tree(db) == {"a": (None, True), "c": ("a", False)}
    with db.transaction() as s:
        assert snapshot_store.current_snapshot(s, "vm") == "a"
        assert snapshot_store.remove_instance_snapshots(s, "vm") == ["a", "c"]
        assert snapshot_store.list_snapshots(s, "vm") == []


def test_snapshot_names_are_unique_per_instance_and_tags_follow_the_name_rule(
    db: Database,
) -> None:
    long_name = "s" + "-x" * 31  # 63 characters
    with db.transaction() as s:
        one = snapshot_store.create_snapshot(s, "vm", SnapshotCreate(name="s1"), ["data"])
        other = snapshot_store.create_snapshot(s, "vm2", SnapshotCreate(name="s1"), ["data"])
        longest = snapshot_store.create_snapshot(s, "vm", SnapshotCreate(name=long_name), [])
    assert one.snapshot.state == SnapshotState.PENDING and one.quiesce
    assert one.tag.startswith("s1-") and one.tag != other.tag
    for record in (one, other, longest):
        assert name_problem(record.tag) is None, record.tag
    assert len(longest.tag) <= 63
    with db.transaction() as s, pytest.raises(Conflict) as twice:
        snapshot_store.create_snapshot(s, "vm", SnapshotCreate(name="s1"), [])
    assert (twice.value.code, twice.value.field) == ("already_exists", "name")
    with db.transaction() as s:
        snapshot_store.mark_snapshot_failed(s, "vm", "s1", "it broke")
        failed = snapshot_store.get_snapshot(s, "vm", "s1").snapshot
        assert (failed.state, failed.message, failed.current) == ("failed", "it broke", False)
        with pytest.raises(NotFound):
            snapshot_store.get_snapshot(s, "vm", "nope")


def _start(db: Database, parent: str | None = None, uid: str = "u1") -> str:
    with db.transaction() as s:
        record = backup_store.start_backup(
            s, "data", uid, kind=BackupKind.FULL, parent=parent, backups_dir="/b/",
            disk_path="/p/data.qcow2", instance="vm", operation="op-1", reason="first",
        )  # fmt: skip
    return record.id


def _finish(db: Database, point: str, kind: BackupKind, parent: str | None) -> None:
    with db.transaction() as s:
        backup_store.finish_backup(
            s, "data", point, kind=kind, parent=parent, size_bytes=10, virtual_size_bytes=100,
            duration_ms=1.0, reason="",
        )  # fmt: skip


def test_points_get_increasing_ids_and_the_chain_remembers_why_it_broke(db: Database) -> None:
    first = _start(db)
    assert first == "b0001"
    with db.transaction() as s:
        assert backup_store.list_points(s, "data") == []  # pending points are not listed
        pending = backup_store.find_backup(s, "data", first)
        assert pending is not None and pending.state == "pending"
        assert pending.point.path == "/b/data/b0001.qcow2"
        assert (pending.instance, pending.operation, pending.disk_path) == (
            "vm", "op-1", "/p/data.qcow2"
        )  # fmt: skip
    _finish(db, first, BackupKind.FULL, None)
    second = _start(db, parent=first)
    with db.transaction() as s:
        backup_store.drop_backup(s, "data", second)  # rolled back: its id is never handed out again
        backup_store.require_full(s, "data", "cut short")
        assert backup_store.get_chain(s, "data") == backup_store.BackupChain(
            "data", "u1", 2, "cut short"
        )
    third = _start(db)
    assert third == "b0003"
    _finish(db, third, BackupKind.FULL, None)
    with db.transaction() as s:
        assert backup_store.get_chain(s, "data").full_reason is None  # type: ignore[union-attr]
        assert [p.id for p in backup_store.list_points(s, "data")] == ["b0001", "b0003"]
        backup_store.mark_deleting(s, "data", ["b0001"])
        assert [r.id for r in backup_store.deleting_points(s, "data")] == ["b0001"]
        assert backup_store.volumes_with_deleting_points(s) == {"data"}
        with pytest.raises(NotFound):
            backup_store.get_point(s, "data", "b0001")  # not ready any more
        assert backup_store.has_backups(s, "data") and not backup_store.has_backups(s, "x")
    assert backup_store.point_id(12345) == "b12345"


def test_restores_pin_their_point_while_pending(db: Database) -> None:
    with db.transaction() as s:
        volume_store.create_volume(
            s, "copy", VolumeSpec(size_bytes=1024**2), restore_source="/b/data/b0001.qcow2"
        )
        assert volume_store.get_volume(s, "copy").restore_source == "/b/data/b0001.qcow2"
        assert volume_store.pending_restores_from(s, "/b/data/b0001.qcow2") == ["copy"]
        assert volume_store.pending_restores_from(s, "/b/data/b0002.qcow2") == []


def test_upgrading_a_0002_store_adds_snapshots_and_backups(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "corral.db")
    engine = make_engine(url)
    migrate(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO volumes (name, uid, generation, deleting, pool, thin_source, spec, "
                "status, created_at, updated_at) VALUES ('old', 'u', 1, 0, 'default', 0, "
                "'{\"size_bytes\": 1048576}', '{}', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    db = open_database(url)
    with db.transaction() as s:
        assert volume_store.get_volume(s, "old").restore_source is None
        assert snapshot_store.list_snapshots(s, "vm") == []
        assert backup_store.list_points(s, "old") == []
    db.close()
